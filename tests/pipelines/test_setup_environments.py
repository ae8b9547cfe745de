"""pipelines/setup_environments.py against Azure DevOps' Environments, Checks and Permissions APIs (respx)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest
import respx

from pipelines.setup_environments import APPROVAL, add_parser, configure, run

ORG = "https://dev.azure.com/contoso"
ENVIRONMENTS = f"{ORG}/MLOps/_apis/distributedtask/environments"
CHECKS = f"{ORG}/MLOps/_apis/pipelines/checks/configurations"
IDENTITIES = "https://vssps.dev.azure.com/contoso/_apis/identities"
APPROVER_ID = "3b8a6f2e-1c2d-4e5f-9a0b-1c2d3e4f5a6b"


def args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(["--org-url", ORG, "--project", "MLOps", *extra])


class FakeDevOps:
    """Environments and checks held in memory behind respx routes, as Azure DevOps keeps them."""

    def __init__(self, mock: respx.MockRouter, *, environments: dict[str, int] | None = None, gated: bool = False):
        self.environments = dict(environments or {})
        self.checks: list[dict[str, Any]] = []
        self.permissions: dict[int, list[dict[str, Any]]] = {}
        if gated:
            self.checks.append({"type": APPROVAL, "resource": {"id": str(self.environments["mlops-production"])}})
        mock.get(ENVIRONMENTS).mock(side_effect=self.list_environments)
        mock.post(ENVIRONMENTS).mock(side_effect=self.create_environment)
        mock.get(CHECKS).mock(side_effect=self.list_checks)
        self.add_check = mock.post(CHECKS).mock(side_effect=self.create_check)
        mock.patch(url__regex=rf"{ORG}/MLOps/_apis/pipelines/pipelinePermissions/environment/\d+").mock(
            side_effect=self.authorize
        )
        mock.get(IDENTITIES).mock(side_effect=self.identities)

    def list_environments(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["api-version"] == "7.1-preview.1"
        assert request.headers["Authorization"] == "Bearer entra-token"
        name = request.url.params["name"]
        found = [{"id": i, "name": n} for n, i in self.environments.items() if n == name]
        return httpx.Response(200, json={"count": len(found), "value": found})

    def create_environment(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.environments[body["name"]] = len(self.environments) + 7
        return httpx.Response(200, json={"id": self.environments[body["name"]], "name": body["name"]})

    def list_checks(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["resourceType"] == "environment"
        found = [c for c in self.checks if c["resource"]["id"] == request.url.params["resourceId"]]
        return httpx.Response(200, json={"count": len(found), "value": found})

    def create_check(self, request: httpx.Request) -> httpx.Response:
        self.checks.append(json.loads(request.content))
        return httpx.Response(200, json=self.checks[-1])

    def authorize(self, request: httpx.Request) -> httpx.Response:
        environment_id = int(request.url.path.rsplit("/", 1)[1])
        self.permissions[environment_id] = json.loads(request.content)["pipelines"]
        return httpx.Response(200, json={})

    def identities(self, request: httpx.Request) -> httpx.Response:
        known = {"release-approvers@contoso.com": APPROVER_ID}
        who = request.url.params["filterValue"]
        return httpx.Response(200, json={"value": [{"id": known[who]}] if who in known else []})


def setup(namespace: argparse.Namespace) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run(namespace, token=lambda: "entra-token", say=lines.append), lines


@respx.mock
def test_creates_both_environments_gates_production_and_authorises_the_pipelines() -> None:
    devops = FakeDevOps(respx.mock)

    code, lines = setup(args("--approver", "release-approvers@contoso.com", "--pipeline", "12", "--pipeline", "13"))

    assert code == 0
    assert set(devops.environments) == {"mlops-staging", "mlops-production"}
    (check,) = devops.checks
    assert check["type"] == APPROVAL
    assert check["resource"] == {
        "type": "environment",
        "id": str(devops.environments["mlops-production"]),
        "name": "mlops-production",
    }
    assert check["settings"]["approvers"] == [{"id": APPROVER_ID}]
    assert check["settings"]["minRequiredApprovers"] == 1
    assert devops.permissions == {
        i: [{"id": 12, "authorized": True}, {"id": 13, "authorized": True}] for i in devops.environments.values()
    }
    assert "added an Approval check to mlops-production (1 approver(s))" in lines


@respx.mock
def test_a_second_run_changes_nothing_and_keeps_approvers_edited_in_the_web_ui() -> None:
    devops = FakeDevOps(respx.mock, environments={"mlops-staging": 1, "mlops-production": 2}, gated=True)

    code, lines = setup(args("--approver", APPROVER_ID))

    assert code == 0
    assert devops.add_check.call_count == 0
    assert lines == [
        "environment mlops-staging exists (id 1)",
        "environment mlops-production exists (id 2)",
        "mlops-production is gated: 1 Approval check(s), left as they are",
    ]


@respx.mock
def test_dry_run_prints_the_plan_and_writes_nothing() -> None:
    devops = FakeDevOps(respx.mock)

    code, lines = setup(args("--dry-run", "--approver", APPROVER_ID, "--pipeline", "13"))

    assert code == 0
    assert devops.environments == {} and devops.checks == [] and devops.permissions == {}
    assert lines[:3] == [
        "would create environment mlops-staging",
        "would create environment mlops-production",
        "would add an Approval check to mlops-production (1 approver(s))",
    ]


@respx.mock
def test_production_is_never_left_ungated_silently(capsys: pytest.CaptureFixture[str]) -> None:
    devops = FakeDevOps(respx.mock, environments={"mlops-staging": 1, "mlops-production": 2})

    code, _ = setup(args())

    assert code == 1
    assert "mlops-production has no Approval check yet: name its approvers with --approver" in capsys.readouterr().err
    assert devops.checks == []


@respx.mock
def test_verify_fails_when_production_has_no_approval(capsys: pytest.CaptureFixture[str]) -> None:
    devops = FakeDevOps(respx.mock, environments={"mlops-staging": 1, "mlops-production": 2})

    code, lines = setup(args("--verify"))

    assert code == 1
    assert lines[-1] == "mlops-production has no Approval check: production deploys without a human"
    assert devops.environments == {"mlops-staging": 1, "mlops-production": 2}


@respx.mock
def test_an_ambiguous_approver_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    FakeDevOps(respx.mock, environments={"mlops-staging": 1, "mlops-production": 2})

    assert setup(args("--approver", "nobody@contoso.com"))[0] == 1
    assert "approver 'nobody@contoso.com' matches 0 identities" in capsys.readouterr().err


@respx.mock
@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(401, json={"message": "TF400813: The user is not authorized"}), "HTTP 401: TF400813"),
        (httpx.Response(203, text="<html>Sign In</html>", headers={"content-type": "text/html"}), "run `az login`"),
    ],
)
def test_refusals_are_one_line(response: httpx.Response, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    respx.get(ENVIRONMENTS).mock(return_value=response)

    assert setup(args())[0] == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_organisation_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parser.parse_args(["--project", "MLOps", "--org-url", ""]), token=lambda: "t") == 2
    assert "--org-url and --project are required" in capsys.readouterr().err


def test_it_plugs_into_a_cli_as_a_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="mlflow-relay")
    add_parser(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["environments", "--org-url", ORG, "--project", "MLOps", "--verify"])
    assert (parsed.command, parsed.production, parsed.verify) == ("environments", "mlops-production", True)

"""``mlflow-relay doctor`` against loopback stand-ins: the identity endpoint and Key Vault
(``standins.azure``), Azure DevOps with projects, pipelines and preview runs
(``standins.devops``) and real Azurite. All green first; then one fault at a time turns exactly
the check it concerns red, with its remedy, and no output ever holds a secret or a token."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import relay.composition
from devops.auth import AZURE_DEVOPS_SCOPE
from relay.settings import SETTING_NAMES
from relay.storage_clients import azurite_connection_string
from relay_tools.cli import main
from standins.azure import IDENTITY_HEADER, IdentityStandIn, KeyVaultStandIn
from standins.azurite import Azurite, acquire_shared, release_shared
from standins.devops import RELAY_DEFAULT_PARAMETERS, DevOpsStandIn

pytestmark = pytest.mark.azurite

WEBHOOK_SECRET = "whsec-doctor-4b9e2c17d0a65f38"
DEVOPS_PAT = "pat-doctor-0f1e2d3c4b5a69788"
DEVOPS_RESOURCE = AZURE_DEVOPS_SCOPE.removesuffix("/.default")
RULES = """\
rules:
  - name: staging
    pipeline_id: 12
    when: {to_stage: Staging}
  - name: production
    pipeline_id: 13
    when: {to_stage: Production}
  - name: champion-deploy
    pipeline_id: 13
    when: {event: model_version_alias.created, alias: champion}
"""
# What azure-identity and the HTTP stacks read from the process environment on their own.
AMBIENT = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
)


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    yield acquire_shared()
    release_shared()


@dataclass
class Deployment:
    """A deployment on loopback, configured through the process environment as in Azure."""

    devops: DevOpsStandIn
    identity: IdentityStandIn
    vault: KeyVaultStandIn
    env: pytest.MonkeyPatch
    rules: Path

    @property
    def tokens(self) -> list[str]:
        return [self.identity.token_for(DEVOPS_RESOURCE), self.identity.token_for(self.vault.resource)]

    def doctor(self, *extra: str) -> tuple[int, str, str]:
        relay.composition.azure_credential.cache_clear()  # the identity endpoint is per test
        code = main(["doctor", *extra])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    capsys: Any = None


@pytest.fixture
def deployment(
    azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Deployment]:
    identity = IdentityStandIn().start()
    devops = DevOpsStandIn(
        tmp_path / "devops",
        pat=None,
        bearer_token=identity.token_for(DEVOPS_RESOURCE),
        projects=frozenset({"MLOps"}),
        pipelines={12: "model-deploy-staging", 13: "model-deploy-production"},
    ).start()
    vault = KeyVaultStandIn(devops.tls, identity, secrets={"mlflow-webhook-secret": WEBHOOK_SECRET}).start()
    rules = tmp_path / "routes.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for name in (*SETTING_NAMES, *AMBIENT):
        monkeypatch.delenv(name, raising=False)
    ca = str(devops.tls.ca_file)
    settings = {
        "DEVOPS_ORG_URL": devops.org_url,
        "DEVOPS_PROJECT": "MLOps",
        "DEVOPS_CA_BUNDLE": ca,
        "KEY_VAULT_URL": vault.vault_url,
        "ROUTES_FILE": str(rules),
        "AzureWebJobsStorage": azurite.connection_string,
        "IDEMPOTENCY_TABLE": "doctor" + uuid.uuid4().hex[:12],
        "IDENTITY_ENDPOINT": identity.endpoint,
        "IDENTITY_HEADER": IDENTITY_HEADER,
        "REQUESTS_CA_BUNDLE": ca,
        "SSL_CERT_FILE": ca,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    yield Deployment(devops, identity, vault, monkeypatch, rules, capsys)
    relay.composition.azure_credential.cache_clear()
    vault.stop()
    devops.stop()
    identity.stop()


def lines_of(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("doctor: ")]


def failed_lines(out: str) -> list[str]:
    return [line for line in lines_of(out) if line.startswith("✗")]


def assert_no_secret(deployment: Deployment, *outputs: str) -> None:
    for text in outputs:
        basic = base64.b64encode(f":{DEVOPS_PAT}".encode()).decode()
        for secret in (WEBHOOK_SECRET, DEVOPS_PAT, basic, *deployment.tokens):
            assert secret not in text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestAllGreen:
    """A complete managed-identity deployment passes every check and starts nothing."""

    def test_every_check_passes_and_exits_zero(self, deployment: Deployment) -> None:
        code, out, err = deployment.doctor()
        assert code == 0, out
        assert failed_lines(out) == []
        checks = {line.split(":")[0] for line in lines_of(out)}
        assert checks == {
            f"✓ {name}"
            for name in ("settings", "rules", "identity", "secrets", "devops", "pipelines", "parameters", "storage")
        }
        assert out.splitlines()[-1].startswith("doctor: ") and "0 failed" in out and "ready" in out
        assert deployment.devops.runs == [], "a preview run must start nothing"
        assert {p["pipeline_id"] for p in deployment.devops.previews} == {12, 13}
        assert_no_secret(deployment, out, err)

    def test_one_line_per_pipeline_rule_and_token(self, deployment: Deployment) -> None:
        _, out, _ = deployment.doctor()
        assert len([line for line in lines_of(out) if line.startswith("✓ pipelines:")]) == 2
        assert len([line for line in lines_of(out) if line.startswith("✓ parameters:")]) == 3
        identity = [line for line in lines_of(out) if line.startswith("✓ identity:")]
        assert [("Azure DevOps" in line, "Key Vault" in line) for line in identity] == [(True, False), (False, True)]

    def test_json_gives_the_same_as_data(self, deployment: Deployment) -> None:
        code, out, err = deployment.doctor("--json")
        report = json.loads(out)
        assert code == 0 and report["ok"] is True
        assert report["summary"] == {"passed": len(report["checks"]), "failed": 0, "skipped": 0}
        assert {c["check"] for c in report["checks"]} >= {"settings", "secrets", "devops", "parameters", "storage"}
        assert_no_secret(deployment, out, err)

    def test_the_pat_opt_in_passes_with_the_pat_in_key_vault(self, deployment: Deployment) -> None:
        deployment.env.setenv("DEVOPS_AUTH", "pat")
        deployment.vault.secrets["devops-pat"] = DEVOPS_PAT
        deployment.devops.pat = DEVOPS_PAT
        code, out, err = deployment.doctor()
        assert code == 0, out
        assert "DEVOPS_AUTH=pat" in out and "retiring PATs" in out
        assert "Azure DevOps is retiring PATs" in err  # the relay's own warning at first use
        assert_no_secret(deployment, out, err)


FaultSetup = Callable[[Deployment], None]


def missing_secret(d: Deployment) -> None:
    d.vault.secrets.clear()


def no_key_vault_role(d: Deployment) -> None:
    d.vault.rbac_denied = True


def identity_not_in_organisation(d: Deployment) -> None:
    d.devops.bearer_token = "the-token-of-a-member"


def unknown_pipeline(d: Deployment) -> None:
    d.rules.write_text(RULES.replace("pipeline_id: 12", "pipeline_id: 99"), encoding="utf-8")


def undeclared_parameter(d: Deployment) -> None:
    d.devops.declared_parameters[12] = RELAY_DEFAULT_PARAMETERS - {"alias"}


def storage_unreachable(d: Deployment) -> None:
    port = closed_port()
    d.env.setenv("AzureWebJobsStorage", azurite_connection_string(blob_port=port, queue_port=port, table_port=port))


FAULTS: dict[str, tuple[FaultSetup, str, tuple[str, ...], tuple[str, ...]]] = {
    # fault: (setup, the one check that turns red, words in its lines, words in the remedy)
    "missing secret": (missing_secret, "secrets", ("'mlflow-webhook-secret'", "does not exist"), ("step 3",)),
    "no Key Vault role": (no_key_vault_role, "secrets", ("denied",), ("Key Vault Secrets User",)),
    "identity not in the organisation": (
        identity_not_in_organisation,
        "devops",
        ("HTTP 401", "not a member", "TF400813"),
        ("add the app's identity",),
    ),
    "unknown pipeline id": (unknown_pipeline, "pipelines", ("pipeline 99", "does not exist"), ("pipeline_id",)),
    "undeclared parameter": (
        undeclared_parameter,
        "parameters",
        ("'staging'", "Unexpected parameter 'alias'"),
        ("declare the parameter",),
    ),
    "storage unreachable": (storage_unreachable, "storage", ("unreachable",), ("AzureWebJobsStorage",)),
}


class TestOneFaultAtATime:
    @pytest.mark.parametrize("fault", list(FAULTS))
    def test_the_fault_turns_exactly_its_check_red_with_the_remedy(self, deployment: Deployment, fault: str) -> None:
        setup, check, words, remedy_words = FAULTS[fault]
        setup(deployment)
        code, out, err = deployment.doctor()
        red = failed_lines(out)
        assert code == 1, out
        assert red, out
        assert {line.split(":")[0] for line in red} == {f"✗ {check}"}, out
        assert all(word in " ".join(red) for word in words), red
        remedies = [line.split("→", 1)[1] for line in red]
        assert all(word in " ".join(remedies) for word in remedy_words), red
        assert "NOT ready" in out.splitlines()[-1]
        assert deployment.devops.runs == []
        assert_no_secret(deployment, out, err)

    def test_checks_that_depend_on_a_red_one_are_skipped_with_the_reason(self, deployment: Deployment) -> None:
        identity_not_in_organisation(deployment)
        _, out, _ = deployment.doctor()
        skipped = [line for line in lines_of(out) if line.startswith("- ")]
        assert {line.split(":")[0] for line in skipped} == {"- pipelines", "- parameters"}
        assert all("skipped, Azure DevOps did not accept" in line for line in skipped)

    def test_an_unknown_pipeline_skips_its_rule_s_preview_only(self, deployment: Deployment) -> None:
        unknown_pipeline(deployment)
        _, out, _ = deployment.doctor()
        assert [line.split(":")[1].strip() for line in lines_of(out) if line.startswith("- parameters")] == [
            "rule 'staging'"
        ]
        assert [p["pipeline_id"] for p in deployment.devops.previews] == [13, 13]


class TestPatFaults:
    """The PAT's failure modes are each named: an expired PAT and a sign-in page."""

    @pytest.fixture
    def pat_deployment(self, deployment: Deployment) -> Deployment:
        deployment.env.setenv("DEVOPS_AUTH", "pat")
        deployment.vault.secrets["devops-pat"] = DEVOPS_PAT
        return deployment

    def test_an_expired_pat_is_named(self, pat_deployment: Deployment) -> None:
        pat_deployment.devops.pat = None
        pat_deployment.devops.expired_pats = frozenset({DEVOPS_PAT})
        code, out, err = pat_deployment.doctor()
        (red,) = failed_lines(out)
        assert code == 1 and red.startswith("✗ devops:") and "the PAT has expired" in red
        assert "managed-identity" in red.split("→", 1)[1]
        assert_no_secret(pat_deployment, out, err)

    def test_a_sign_in_page_is_named(self, pat_deployment: Deployment) -> None:
        pat_deployment.devops.pat = "some-other-pat"
        code, out, err = pat_deployment.doctor()
        (red,) = failed_lines(out)
        assert code == 1 and "HTTP 203 with a sign-in page" in red and "PAT is invalid or expired" in red
        assert_no_secret(pat_deployment, out, err)

    def test_a_missing_pat_skips_the_devops_checks(self, pat_deployment: Deployment) -> None:
        del pat_deployment.vault.secrets["devops-pat"]
        _, out, _ = pat_deployment.doctor()
        (red,) = failed_lines(out)
        assert red.startswith("✗ secrets:") and "'devops-pat'" in red
        assert "- devops:" in out and "the PAT could not be read" in out


class TestWithoutADeployment:
    def test_each_missing_setting_is_its_own_line_and_nothing_is_contacted(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for name in (*SETTING_NAMES, *AMBIENT):
            monkeypatch.delenv(name, raising=False)
        code = main(["doctor"])
        out = capsys.readouterr().out
        red = failed_lines(out)
        assert code == 1
        assert [line.split(":")[1].strip() for line in red] == ["setting DEVOPS_ORG_URL", "setting DEVOPS_PROJECT"]
        assert all("is required" in line and "→ set" in line for line in red)
        assert "✓ rules:" in out  # the shipped routes.yaml still loads
        assert [line.split(":")[0] for line in lines_of(out) if line.startswith("- ")] == [
            "- identity",
            "- secrets",
            "- devops",
            "- pipelines",
            "- parameters",
            "- storage",
            "- storage",
        ]

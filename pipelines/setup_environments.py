"""Create the deployment environments and gate production behind an approval, through Azure DevOps' REST API.

``python -m pipelines.setup_environments --org-url https://dev.azure.com/contoso --project MLOps
--approver release-approvers@contoso.com --pipeline 13`` makes sure that:

1. the environments ``mlops-staging`` and ``mlops-production`` exist (Environments API);
2. ``mlops-production`` has an Approval check (Checks API, check type ``Approval``); an existing
   Approval check is left as it is, so approvers edited in the web UI are never overwritten;
3. the given pipelines may use both environments (Pipeline Permissions API), so their first run
   does not stop to ask.

It is idempotent; ``--dry-run`` prints the plan and changes nothing, and ``--verify`` only checks
that production is gated (exit 1 if not). It runs as the person who owns the environments, with
their Azure CLI sign-in (an Entra token for Azure DevOps; no PAT). The relay's identity needs
none of this: it only queues runs. Also usable as a CLI subcommand: ``add_parser(subparsers)``
and ``run(args)``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
API_VERSION = "7.1-preview.1"
APPROVAL = {"id": "8c6f20a7-a545-4486-9777-f762fafe0d4d", "name": "Approval"}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class SetupError(Exception):
    """A refusal or a missing input; the message is one line for the person running the command."""


class EnvironmentsApi:
    """The few Azure DevOps calls this command makes; ``token`` returns an Entra access token."""

    def __init__(self, org_url: str, project: str, token: Callable[[], str], *, client: httpx.Client | None = None):
        self._org, self._project, self._token = org_url.rstrip("/"), project, token
        self._client = client or httpx.Client(timeout=30)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        params = {"api-version": API_VERSION, **kwargs.pop("params", {})}
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            response = self._client.request(method, url, params=params, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise SetupError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 203 or "json" not in response.headers.get("content-type", ""):
            raise SetupError(f"{method} {url}: Azure DevOps answered with a sign-in page; run `az login` first")
        if response.status_code >= 400:
            message = response.json().get("message", response.text[:200])
            raise SetupError(f"{method} {url}: HTTP {response.status_code}: {message}")
        return response.json() if response.content else {}

    def _project_url(self, path: str) -> str:
        return f"{self._org}/{self._project}/_apis/{path}"

    def find_environment(self, name: str) -> dict[str, Any] | None:
        found = self._call("GET", self._project_url("distributedtask/environments"), params={"name": name})
        return next((e for e in found.get("value", []) if str(e.get("name", "")).casefold() == name.casefold()), None)

    def create_environment(self, name: str, description: str) -> dict[str, Any]:
        body = {"name": name, "description": description}
        created: dict[str, Any] = self._call("POST", self._project_url("distributedtask/environments"), json=body)
        return created

    def approval_checks(self, environment_id: int) -> list[dict[str, Any]]:
        params = {"resourceType": "environment", "resourceId": str(environment_id), "$expand": "settings"}
        found = self._call("GET", self._project_url("pipelines/checks/configurations"), params=params)
        return [c for c in found.get("value", []) if str(c.get("type", {}).get("id", "")).lower() == APPROVAL["id"]]

    def add_approval(
        self, environment: dict[str, Any], approvers: list[str], *, instructions: str, timeout: int
    ) -> None:
        body = {
            "type": APPROVAL,
            "settings": {
                "approvers": [{"id": a} for a in approvers],
                "executionOrder": "anyOrder",
                "minRequiredApprovers": 1,
                "instructions": instructions,
                "blockedApprovers": [],
                "requesterCannotBeApprover": False,
            },
            "resource": {"type": "environment", "id": str(environment["id"]), "name": environment["name"]},
            "timeout": timeout,
        }
        self._call("POST", self._project_url("pipelines/checks/configurations"), json=body)

    def authorize_pipelines(self, environment_id: int, pipeline_ids: Sequence[int]) -> None:
        body = {"pipelines": [{"id": p, "authorized": True} for p in pipeline_ids]}
        self._call("PATCH", self._project_url(f"pipelines/pipelinePermissions/environment/{environment_id}"), json=body)

    def identity_id(self, who: str) -> str:
        """An identity id for an approver given as an id, an e-mail address or a group name."""
        if _GUID.match(who):
            return who
        parts = urlsplit(self._org)
        if parts.hostname != "dev.azure.com":
            raise SetupError(f"approver {who!r}: pass the identity id (a GUID) on this server")
        url = f"https://vssps.dev.azure.com{parts.path}/_apis/identities"
        found = self._call("GET", url, params={"searchFilter": "General", "filterValue": who, "api-version": "7.1"})
        ids = [str(i["id"]) for i in found.get("value", [])]
        if len(ids) != 1:
            raise SetupError(f"approver {who!r} matches {len(ids)} identities; pass one identity id instead")
        return ids[0]


def apply(api: EnvironmentsApi, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Bring the environments in line with ``args``; return the exit code."""
    environments: dict[str, dict[str, Any] | None] = {}
    for name, purpose in ((args.staging, "staging"), (args.production, "production")):
        environment = api.find_environment(name)
        if environment is None and not args.verify:
            if args.dry_run:
                say(f"would create environment {name}")
                environment = {"id": None, "name": name}
            else:
                environment = api.create_environment(name, f"mlflow-devops-relay: model deployments to {purpose}")
                say(f"created environment {name} (id {environment['id']})")
        elif environment is not None:
            say(f"environment {name} exists (id {environment['id']})")
        else:
            say(f"environment {name} does not exist")
        environments[purpose] = environment
    production = environments["production"]
    checks = api.approval_checks(production["id"]) if production and production["id"] is not None else []
    if checks:
        say(f"{args.production} is gated: {len(checks)} Approval check(s), left as they are")
    elif args.verify:
        say(f"{args.production} has no Approval check: production deploys without a human")
        return 1
    else:
        if not args.approver:
            raise SetupError(f"{args.production} has no Approval check yet: name its approvers with --approver")
        approvers = [api.identity_id(a) for a in args.approver]
        if args.dry_run or production is None:
            say(f"would add an Approval check to {args.production} ({len(approvers)} approver(s))")
        else:
            api.add_approval(production, approvers, instructions=args.instructions, timeout=args.timeout_minutes)
            say(f"added an Approval check to {args.production} ({len(approvers)} approver(s))")
    if args.pipeline and not args.verify:
        for environment in filter(None, environments.values()):
            if args.dry_run or environment["id"] is None:
                say(f"would authorise pipelines {args.pipeline} on {environment['name']}")
            else:
                api.authorize_pipelines(environment["id"], args.pipeline)
                say(f"authorised pipelines {args.pipeline} on {environment['name']}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``environments`` on a CLI's subparsers (``mlflow-relay environments ...``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "environments", help="create the deployment environments and the production approval check"
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--org-url", default=os.environ.get("DEVOPS_ORG_URL", ""), help="https://dev.azure.com/<org>")
    parser.add_argument("--project", default=os.environ.get("DEVOPS_PROJECT", ""))
    parser.add_argument("--staging", default="mlops-staging", help="staging environment name")
    parser.add_argument("--production", default="mlops-production", help="production environment name")
    parser.add_argument("--approver", action="append", default=[], help="e-mail, group name or identity id; repeat")
    parser.add_argument("--instructions", default="Check the model version, its validation tags and the run.")
    parser.add_argument("--timeout-minutes", type=int, default=43200, help="how long an approval may wait (30 days)")
    parser.add_argument("--pipeline", action="append", type=int, default=[], help="pipeline id to authorise; repeat")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    mode.add_argument("--verify", action="store_true", help="only check that production is gated")


def _azure_cli_token() -> str:
    from azure.identity import AzureCliCredential

    return str(AzureCliCredential().get_token(AZURE_DEVOPS_SCOPE).token)


def run(
    args: argparse.Namespace,
    *,
    token: Callable[[], str] = _azure_cli_token,
    client: httpx.Client | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the command; errors are one line and exit code 1 (2 for missing inputs)."""
    if not (args.org_url and args.project):
        print("error: --org-url and --project are required (or DEVOPS_ORG_URL and DEVOPS_PROJECT)", file=sys.stderr)
        return 2
    try:
        return apply(EnvironmentsApi(args.org_url, args.project, token, client=client), args, say)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # credential errors and the like: one line, no traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.setup_environments", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

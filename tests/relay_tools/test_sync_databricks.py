"""``mlflow-relay sync`` against a loopback Databricks workspace: registry webhooks and bridge jobs.

The client is the one ``sync`` builds itself, ``databricks-sdk``'s ``WorkspaceClient`` with its
default configuration (host and token from the environment, the stand-in's CA trusted through
``REQUESTS_CA_BUNDLE``), so these tests check what the SDK really sends.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay_tools.sync import add_sync_parser
from relay_tools.sync_jobs import trigger_key
from standins.databricks_admin import DatabricksAdminStandIn

RELAY = "https://relay.example.test/api/MLflowWebHookTransition"
SECRET = "whsec-sync-unit-5e1f"
WEBHOOKS = "/api/2.0/mlflow/registry-webhooks"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksAdminStandIn]:
    """The stand-in, and an environment where the SDK's default auth finds it and nothing else."""
    pytest.importorskip("databricks.sdk")
    standin = DatabricksAdminStandIn(workdir=tmp_path / "databricks").start()
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "ARM_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no.databrickscfg"))
    monkeypatch.setenv("DATABRICKS_HOST", standin.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", standin.token)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.tls.ca_file))
    try:
        yield standin
    finally:
        standin.stop()


class Sync:
    """Runs ``sync`` as the CLI parses it; counts how often the secret was asked for."""

    def __init__(self, tmp_path: Path) -> None:
        self.rules = tmp_path / "routes.yaml"
        self.secret_reads = 0

    def secret(self) -> str:
        self.secret_reads += 1
        return SECRET

    def __call__(self, platform: str, rules: str, *flags: str) -> tuple[int, str, str]:
        self.rules.write_text(textwrap.dedent(rules), encoding="utf-8")
        parser = argparse.ArgumentParser(prog="mlflow-relay")
        add_sync_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["sync", "--platform", platform, "--url", RELAY, "--rules", str(self.rules), *flags])
        out, err = io.StringIO(), io.StringIO()
        code = args.func(args, secret_provider=self.secret, out=out, err=err)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sync(tmp_path: Path) -> Sync:
    return Sync(tmp_path)


REGISTRY_RULES = """\
rules:
  - {name: staging, pipeline_id: 12, when: {to_stage: Staging}}
  - {name: wine-prod, pipeline_id: 13, when: {model: wine, to_stage: Production}}
  - {name: champion, pipeline_id: 13, when: {alias: champion}}
"""


class TestRegistryWebhooks:
    def test_create_then_no_change_then_update_then_prune(self, workspace: DatabricksAdminStandIn, sync: Sync) -> None:
        workspace.models.add("wine")
        elsewhere = {"url": "https://elsewhere.test/hook", "secret": "theirs"}
        workspace.webhooks["other"] = {
            "id": "other",
            "events": ["MODEL_VERSION_CREATED"],
            "status": "ACTIVE",
            "http_url_spec": elsewhere,
        }

        code, out, err = sync("databricks", REGISTRY_RULES)

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "+ created webhook (registry-wide)  events=MODEL_VERSION_TRANSITIONED_TO_STAGING",
            "+ created webhook wine  events=MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
            "2 created, 0 updated, 0 deleted",
        ]
        registry_wide, wine = workspace.sent("POST", f"{WEBHOOKS}/create")
        assert registry_wide == {
            "events": ["MODEL_VERSION_TRANSITIONED_TO_STAGING"],
            "description": "Starts Azure DevOps pipelines via mlflow-devops-relay (managed by mlflow-relay sync)",
            "http_url_spec": {"url": RELAY, "secret": SECRET, "enable_ssl_verification": True},
        }
        assert wine["model_name"] == "wine" and SECRET not in out
        agent = workspace.requests[-1]["headers"]["User-Agent"]
        assert agent.startswith("mlflow-devops-relay/") and " databricks-sdk-py/" in agent and "auth/pat" in agent
        assert sync.secret_reads == 1

        code, out, _ = sync("databricks", REGISTRY_RULES)
        assert (code, out.splitlines()[-1]) == (0, "no change")
        assert [line[:2] for line in out.splitlines()[:-1]] == ["= ", "= "]
        assert len(workspace.sent("POST", f"{WEBHOOKS}/create")) == 2 and not workspace.sent(
            "PATCH", f"{WEBHOOKS}/update"
        )
        assert sync.secret_reads == 1  # an unchanged webhook keeps its secret: nothing to send

        changed = REGISTRY_RULES.replace("to_stage: Production}", "to_stage: [Production, Archived]}")
        code, out, _ = sync("databricks", changed)
        (update,) = workspace.sent("PATCH", f"{WEBHOOKS}/update")
        wine_id = update["id"]
        assert code == 0 and "~ updated webhook wine wh" in out
        assert "events: MODEL_VERSION_TRANSITIONED_TO_PRODUCTION -> MODEL_VERSION_TRANSITIONED_TO_PRODUCTION," in out
        assert update["events"] == [
            "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
            "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
        ]
        assert update["http_url_spec"]["secret"] == SECRET and update["status"] == "ACTIVE"

        only_staging = "rules:\n  - {name: staging, pipeline_id: 12, when: {to_stage: Staging}}\n"
        code, out, _ = sync("databricks", only_staging)
        assert "- not needed (kept; --prune deletes it) webhook wine" in out and out.endswith("no change\n")
        code, out, _ = sync("databricks", only_staging, "--dry-run", "--prune")
        assert "- would delete webhook wine" in out and "dry run: 0 to create, 0 to update, 1 to delete" in out
        assert len(workspace.webhooks) == 3
        code, out, _ = sync("databricks", only_staging, "--prune")
        assert code == 0 and "- deleted webhook wine" in out
        assert workspace.sent("DELETE", f"{WEBHOOKS}/delete") == [{"id": wine_id}]  # the id in the query, no body
        assert sorted(h.get("model_name", "*") for h in workspace.webhooks.values()) == ["*", "*"]
        assert workspace.webhooks["other"]["http_url_spec"] == elsewhere  # not this relay's: never touched

    def test_dry_run_changes_nothing_and_reads_no_secret(self, workspace: DatabricksAdminStandIn, sync: Sync) -> None:
        workspace.models.add("wine")
        code, out, _ = sync("databricks", REGISTRY_RULES, "--dry-run")
        assert code == 0 and out.splitlines()[0].startswith("+ would create webhook (registry-wide)")
        assert out.endswith("dry run: 2 to create, 0 to update, 0 to delete; nothing was changed\n")
        assert workspace.webhooks == {} and sync.secret_reads == 0

    def test_a_refusal_is_one_line_naming_the_workspace(self, workspace: DatabricksAdminStandIn, sync: Sync) -> None:
        code, _, err = sync("databricks", REGISTRY_RULES)  # model "wine" does not exist
        assert code == 1 and err.count("\n") == 1
        assert (
            err
            == f"mlflow-relay sync --platform databricks ({workspace.host}): Registered model 'wine' does not exist.\n"
        )

    def test_a_throttled_call_is_retried_after_retry_after(self, workspace: DatabricksAdminStandIn, sync: Sync) -> None:
        workspace.faults.append((f"{WEBHOOKS}/list", 429, {"Retry-After": "1"}))
        code, out, _ = sync("databricks", "rules:\n  - {name: s, pipeline_id: 1, when: {to_stage: Staging}}\n")
        assert code == 0 and "+ created webhook (registry-wide)" in out
        assert [r["path"] for r in workspace.requests].count(f"{WEBHOOKS}/list") == 2

    def test_a_wrong_token_is_one_line(self, workspace: DatabricksAdminStandIn, sync: Sync, monkeypatch: Any) -> None:
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
        code, _, err = sync("databricks", REGISTRY_RULES)
        assert code == 1 and "Credential was not sent" in err and "dapi-wrong" not in err and err.count("\n") == 1


UC_RULES = """\
rules:
  - {name: champion, pipeline_id: 13, when: {event: model_version_alias.created, alias: champion, model: main.mlops.*}}
  - {name: challenger, pipeline_id: 12, when: {event: model_version_alias.created, alias: challenger,
                                               model: main.mlops.*}}
  - {name: validate, pipeline_id: 7, when: {event: model_version.created, model: main.mlops.wine}}
"""


def bridge_jobs(workspace: DatabricksAdminStandIn) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for settings in workspace.jobs.values():
        model = (settings.get("trigger") or {}).get("model")
        if model:
            found[(model["condition"], model.get("securable_name", ""))] = settings
    return found


class TestBridgeJobs:
    def test_create_then_no_change_then_update_then_prune(self, workspace: DatabricksAdminStandIn, sync: Sync) -> None:
        template = json.loads((Path(__file__).resolve().parents[2] / "databricks_job/uc-bridge-job.json").read_text())
        for n in range(25):  # other people's jobs, so the listing is paged (20 a page)
            workspace.jobs[n] = {"name": f"etl-{n}", "tasks": [], "tags": {"team": "data"}}
        # A job whose bridge delivers to this relay, but that sync did not create (no tag): never touched.
        parameters = [{"name": "relay_url", "default": RELAY}, {"name": "model_name", "default": ""}]
        deployment_job = {**template, "name": "my deployment job", "parameters": parameters}
        del deployment_job["trigger"]
        workspace.jobs[99] = copy.deepcopy(deployment_job)

        code, out, err = sync("unity-catalog", UC_RULES)

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "+ created job aliases challenger,champion on main.mlops",
            "+ created job versions on main.mlops.wine",
            "2 created, 0 updated, 0 deleted",
        ]
        aliases, versions = workspace.sent("POST", "/api/2.2/jobs/create")
        assert aliases["trigger"] == {
            "pause_status": "UNPAUSED",
            "model": {
                "condition": "MODEL_ALIAS_SET",
                "securable_name": "main.mlops",
                "aliases": ["challenger", "champion"],
            },
        }
        assert versions["trigger"]["model"] == {"condition": "MODEL_VERSION_READY", "securable_name": "main.mlops.wine"}
        assert aliases["tags"] == {"mlflow-devops-relay": "sync"}
        assert {p["name"]: p["default"] for p in aliases["parameters"]} == {
            "relay_url": RELAY,
            "model_updates": "{{job.trigger.model.updates}}",
        }
        assert aliases["tasks"] == template["tasks"] and aliases["environments"] == template["environments"]
        assert sync.secret_reads == 0  # the bridge reads its secret from a Databricks secret scope
        listings = workspace.sent("GET", "/api/2.2/jobs/list")
        assert [q.get("page_token") for q in listings] == [None, "20"]  # the SDK followed the second page

        code, out, _ = sync("unity-catalog", UC_RULES)  # the server added its defaults: still no change
        assert (code, out.splitlines()[-1]) == (0, "no change")
        assert not workspace.sent("POST", "/api/2.2/jobs/reset")

        code, out, _ = sync("unity-catalog", UC_RULES.replace("alias: challenger", "alias: [challenger, canary]"))
        (reset,) = workspace.sent("POST", "/api/2.2/jobs/reset")
        assert code == 0 and "~ updated job aliases canary,challenger,champion on main.mlops (" in out
        assert reset["new_settings"]["trigger"]["model"]["aliases"] == ["canary", "challenger", "champion"]
        assert bridge_jobs(workspace)[("MODEL_ALIAS_SET", "main.mlops")]["name"].endswith(
            "canary,challenger,champion on main.mlops"
        )

        only_aliases = "\n".join(UC_RULES.splitlines()[:4]) + "\n"
        code, out, _ = sync("unity-catalog", only_aliases, "--prune")
        assert code == 0 and "- deleted job mlflow-devops-relay-uc-bridge versions on main.mlops.wine (" in out
        managed = [s for s in workspace.jobs.values() if (s.get("tags") or {}).get("mlflow-devops-relay") == "sync"]
        assert [trigger_key(s) for s in managed] == [("MODEL_ALIAS_SET", "main.mlops")]
        assert workspace.jobs[99] == deployment_job and len(workspace.jobs) == 25 + 1 + 1

    def test_a_job_spec_without_the_bridge_is_refused(
        self, workspace: DatabricksAdminStandIn, sync: Sync, tmp_path: Path
    ) -> None:
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps({"name": "x", "tasks": [{"task_key": "a", "notebook_task": {}}]}))
        code, _, err = sync("unity-catalog", UC_RULES, "--job-spec", str(spec))
        assert code == 2 and "has no relay-uc-bridge wheel task" in err
        assert not workspace.sent("POST", "/api/2.2/jobs/create")

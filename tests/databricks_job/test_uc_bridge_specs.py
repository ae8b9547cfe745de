"""The Unity Catalog bridge's job definitions: valid Jobs API settings, arguments the bridge parses,
a bundle that defines the same jobs, and a deployment job whose last task is the bridge."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from databricks_job.uc_bridge import _batch, build_parser
from databricks_job.uc_updates import ModelUpdate

SPECS = Path(__file__).resolve().parents[2] / "databricks_job"
TRIGGERED = ("uc-bridge-job.json", "uc-bridge-versions-job.json")
BUNDLE_JOBS = {"uc_bridge_aliases": "uc-bridge-job.json", "uc_bridge_versions": "uc-bridge-versions-job.json"}
BATCH = '[{"full_name": "main.mlops.wine", "version": 4, "alias_name": "champion"}]'


def spec(name: str) -> dict[str, Any]:
    document = json.loads((SPECS / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def resolved_arguments(task: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """A wheel task's arguments as Databricks passes them: job parameters, then dynamic values resolved."""
    arguments = [
        re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: parameters[m.group(1)], a)
        for a in task["python_wheel_task"]["parameters"]
    ]
    dynamic = {"{{job.run_id}}": "881", "{{job.trigger.model.updates}}": BATCH}
    for reference, value in dynamic.items():
        arguments = [a.replace(reference, value) for a in arguments]
    assert not [a for a in arguments if "{{" in a], f"unresolved references: {arguments}"
    return arguments


@pytest.mark.parametrize("name", [*TRIGGERED, "uc-deployment-job.json"])
def test_spec_is_jobs_api_settings_databricks_sdk_accepts_unchanged(name: str) -> None:
    """``databricks jobs create --json`` sends JobSettings; the SDK's model of them keeps every field."""
    from databricks.sdk.service.jobs import JobSettings

    document = spec(name)
    assert JobSettings.from_dict(document).as_dict() == document


@pytest.mark.parametrize("name", TRIGGERED)
def test_triggered_job_hands_the_trigger_batch_to_the_bridge(name: str) -> None:
    document = spec(name)
    parameters = {p["name"]: p["default"] for p in document["parameters"]}
    assert parameters["model_updates"] == "{{job.trigger.model.updates}}"
    (task,) = document["tasks"]

    ns = build_parser().parse_args(resolved_arguments(task, parameters))

    assert _batch(ns) == [ModelUpdate("main.mlops.wine", "4", "champion")]
    assert (ns.job_run_id, ns.secret_scope, ns.relay_url) == ("881", "mlflow-devops-relay", parameters["relay_url"])


def test_shipped_triggers_watch_champion_and_challenger_and_new_versions() -> None:
    aliases, versions = (spec(name)["trigger"] for name in TRIGGERED)
    assert aliases["model"] == {
        "condition": "MODEL_ALIAS_SET",
        "securable_name": "main.mlops",
        "aliases": ["champion", "challenger"],
    }
    assert versions["model"] == {"condition": "MODEL_VERSION_READY", "securable_name": "main.mlops"}
    assert aliases["pause_status"] == versions["pause_status"] == "UNPAUSED"


def test_triggered_jobs_run_one_batch_at_a_time_in_order() -> None:
    # One run at a time, the rest queued: the relay sees an alias move after the one before it.
    for name in TRIGGERED:
        assert (spec(name)["max_concurrent_runs"], spec(name)["queue"]) == (1, {"enabled": True})


def _substitute(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables) for v in node]
    if isinstance(node, str):
        return re.sub(r"\$\{var\.(\w+)\}", lambda m: variables[m.group(1)], node)
    return node


def test_bundle_defines_the_same_jobs_as_the_json_files() -> None:
    bundle = yaml.safe_load((SPECS / "bundle" / "databricks.yml").read_text(encoding="utf-8"))
    variables = {name: v["default"] for name, v in bundle["variables"].items()}
    jobs = _substitute(bundle["resources"]["jobs"], variables)
    assert set(jobs) == set(BUNDLE_JOBS)
    for key, name in BUNDLE_JOBS.items():
        assert jobs[key] == spec(name), f"bundle job {key} differs from {name}"


def test_deployment_job_runs_the_bridge_last_after_the_approval_task() -> None:
    document = spec("uc-deployment-job.json")
    tasks = {t["task_key"]: t for t in document["tasks"]}
    parameters = {p["name"]: p["default"] for p in document["parameters"]}
    assert {"model_name", "model_version"} <= parameters.keys()  # what a deployment job is started with
    depended_on = {d["task_key"] for t in tasks.values() for d in t.get("depends_on", [])}
    (last,) = set(tasks) - depended_on
    assert tasks[last]["python_wheel_task"]["entry_point"] == "relay-uc-bridge"
    assert tasks[last]["depends_on"] == [{"task_key": "Approval_Check"}]

    values = {**parameters, "model_name": "main.mlops.wine", "model_version": "7"}
    ns = build_parser().parse_args(resolved_arguments(tasks[last], values))

    assert _batch(ns) is None
    assert (ns.event, ns.model_name, ns.model_version, ns.job_run_id) == (
        "model_version.created",
        "main.mlops.wine",
        "7",
        "881",
    )

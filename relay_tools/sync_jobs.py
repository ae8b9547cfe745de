"""The Unity Catalog side of ``mlflow-relay sync``: one bridge job per model update trigger.

Each job is the shipped ``databricks_job/uc-bridge-job.json`` (or ``--job-spec``) with its own
name, description, ``trigger.model`` block and the relay's URL as the ``relay_url`` parameter,
tagged ``mlflow-devops-relay: sync``. Only jobs carrying that tag and this relay's URL are
this sync's to update or delete; a deployment job that ends with the bridge is never touched.
``databricks-sdk`` is imported lazily.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay_tools.sync_plan import Change
from relay_tools.sync_rules import TriggerSpec
from webhook.errors import ConfigurationError

MANAGED_TAG = "mlflow-devops-relay"
MANAGED_VALUE = "sync"
BRIDGE_ENTRY_POINT = "relay-uc-bridge"
_CONDITION_LABELS = {"MODEL_ALIAS_SET": "aliases", "MODEL_VERSION_READY": "versions", "MODEL_CREATED": "models"}


def load_job_template(path: Path) -> dict[str, Any]:
    """The bridge job to copy for each trigger.

    Raises:
        ConfigurationError: unreadable, not JSON, or no ``relay-uc-bridge`` task / ``relay_url`` parameter.
    """
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"bridge job spec {str(path)!r} cannot be read: {exc}") from None
    tasks = template.get("tasks") if isinstance(template, dict) else None
    if not any((t.get("python_wheel_task") or {}).get("entry_point") == BRIDGE_ENTRY_POINT for t in tasks or []):
        raise ConfigurationError(f"bridge job spec {str(path)!r} has no {BRIDGE_ENTRY_POINT} wheel task")
    if relay_url_of(template) is None:
        raise ConfigurationError(f"bridge job spec {str(path)!r} has no 'relay_url' job parameter")
    assert isinstance(template, dict)
    return template


def relay_url_of(settings: dict[str, Any]) -> str | None:
    """The ``relay_url`` job parameter's default: where the job's bridge delivers."""
    for parameter in settings.get("parameters") or []:
        if parameter.get("name") == "relay_url":
            return str(parameter.get("default") or "")
    return None


def job_label(trigger: TriggerSpec) -> str:
    """``aliases champion,challenger on main.mlops``: how the plan and the job's name say what it watches."""
    label = _CONDITION_LABELS.get(trigger.condition, trigger.condition)
    if trigger.aliases:
        label += " " + ",".join(trigger.aliases)
    return f"{label} on {trigger.scope}"


def bridge_job_settings(template: dict[str, Any], trigger: TriggerSpec, *, relay_url: str) -> dict[str, Any]:
    """The Jobs API settings of the bridge job for ``trigger``."""
    settings = copy.deepcopy(template)
    settings["name"] = f"mlflow-devops-relay-uc-bridge {job_label(trigger)}"
    settings["description"] = (
        f"Created by `mlflow-relay sync --platform unity-catalog` from the relay's rules: on {trigger.condition} "
        f"in {trigger.scope}, sends {relay_url} one signed MLflow-format event per update."
    )
    settings["tags"] = {**(template.get("tags") or {}), MANAGED_TAG: MANAGED_VALUE}
    model: dict[str, Any] = {"condition": trigger.condition}
    if trigger.securable:  # empty: the whole metastore
        model["securable_name"] = trigger.securable
    if trigger.aliases:
        model["aliases"] = list(trigger.aliases)
    settings["trigger"] = {"pause_status": "UNPAUSED", "model": model}
    for parameter in settings["parameters"]:
        if parameter["name"] == "relay_url":
            parameter["default"] = relay_url
    return settings


def trigger_key(settings: dict[str, Any]) -> tuple[str, str]:
    """(condition, securable): what a bridge job's trigger watches, its identity for sync."""
    model = (settings.get("trigger") or {}).get("model") or {}
    return str(model.get("condition") or ""), str(model.get("securable_name") or "")


def differing_settings(existing: Any, desired: Any, path: str = "") -> list[str]:
    """The top-level settings where ``existing`` does not hold ``desired`` (extra server defaults are fine)."""
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            return [path or "settings"]
        found = [d for k, v in desired.items() for d in differing_settings(existing.get(k), v, path or k)]
        return list(dict.fromkeys(found))
    if isinstance(desired, list):
        same = isinstance(existing, list) and len(existing) == len(desired)
        if not same or any(differing_settings(e, d, path) for e, d in zip(existing, desired, strict=True)):
            return [path]
        return []
    return [] if existing == desired else [path]


@dataclass(frozen=True)
class BridgeJob:
    """A bridge job this sync manages: its id and its settings as the Jobs API returns them."""

    job_id: int
    settings: dict[str, Any]


class BridgeJobs:
    """The Jobs API (2.2) through ``WorkspaceClient().jobs``."""

    def __init__(self, workspace: Any) -> None:
        self._jobs = workspace.jobs

    def managed(self, relay_url: str) -> list[BridgeJob]:
        """Jobs tagged as this sync's whose bridge delivers to ``relay_url``."""
        found = []
        for summary in self._jobs.list():
            tags = (summary.settings.tags if summary.settings else None) or {}
            if tags.get(MANAGED_TAG) != MANAGED_VALUE:
                continue
            settings = self._jobs.get(summary.job_id).settings.as_dict()
            url = relay_url_of(settings)
            if url is not None and url.rstrip("/").casefold() == relay_url.rstrip("/").casefold():
                found.append(BridgeJob(int(summary.job_id), settings))
        return found

    def create(self, settings: dict[str, Any]) -> int:
        from databricks.sdk.service.jobs import JobSettings

        typed = JobSettings.from_dict(settings)
        fields = {f.name: getattr(typed, f.name) for f in dataclasses.fields(typed)}
        return int(self._jobs.create(**{k: v for k, v in fields.items() if v is not None}).job_id)

    def reset(self, job_id: int, settings: dict[str, Any]) -> None:
        from databricks.sdk.service.jobs import JobSettings

        self._jobs.reset(job_id, JobSettings.from_dict(settings))

    def delete(self, job_id: int) -> None:
        self._jobs.delete(job_id)


def plan_jobs(triggers: list[TriggerSpec], jobs: BridgeJobs, *, template: dict[str, Any], url: str) -> list[Change]:
    """Changes so that each trigger has one bridge job; managed bridge jobs no trigger needs are ``extra``."""
    existing = jobs.managed(url)
    changes = []
    for trigger in triggers:
        desired = bridge_job_settings(template, trigger, relay_url=url)
        key = (trigger.condition, trigger.securable)
        current = [j for j in existing if trigger_key(j.settings) == key]
        existing = [j for j in existing if trigger_key(j.settings) != key] + current[1:]
        label = f"job {job_label(trigger)}"
        if not current:
            changes.append(Change("create", label, "", functools.partial(jobs.create, desired)))
            continue
        diff = differing_settings(current[0].settings, desired)
        reset = functools.partial(jobs.reset, current[0].job_id, desired)
        detail = f"settings: {', '.join(diff)}" if diff else ""
        changes.append(Change("update" if diff else "unchanged", f"{label} ({current[0].job_id})", detail, reset))
    for job in existing:
        label = f"job {job.settings.get('name', '')} ({job.job_id})"
        changes.append(Change("extra", label, "", functools.partial(jobs.delete, job.job_id)))
    return changes

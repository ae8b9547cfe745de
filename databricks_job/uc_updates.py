"""The batch a Unity Catalog model update trigger passes to a job run, parsed (pure, no I/O).

A job with a ``trigger.model`` block gets ``{{job.trigger.model.updates}}``: a JSON list with
one object per update, ``{"full_name": "cat.schema.model", "version": 3, "alias_name": "champion"}``.
``full_name`` is always there; ``version`` is there for *model version is ready* and *model alias
is set*; ``alias_name`` only for *model alias is set* (Databricks docs, "Trigger jobs when models
are updated", job parameters). Each update becomes one MLflow-format event for the relay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from databricks_job.errors import ParameterError

VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"
MODEL_CREATED = "registered_model.created"


@dataclass(frozen=True)
class ModelUpdate:
    """One update of a trigger's batch: which model changed, and how."""

    full_name: str
    version: str | None = None
    alias: str | None = None

    @property
    def event(self) -> str:
        """The MLflow event an MLflow 3 server would send for this change."""
        if self.alias:
            return ALIAS_CREATED
        return VERSION_CREATED if self.version else MODEL_CREATED

    def describe(self) -> str:
        """``name=… version=… alias=…``: how log lines and errors name the update."""
        parts = [f"name={self.full_name}"]
        if self.version:
            parts.append(f"version={self.version}")
        if self.alias:
            parts.append(f"alias={self.alias}")
        return " ".join(parts)


def _text(item: dict[str, Any], key: str, position: int) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ParameterError(f"--model-updates: update #{position} field {key!r} must be text or a number")
    return str(value)


def parse_model_updates(text: str) -> list[ModelUpdate]:
    """Parse the trigger's JSON list, in order.

    Raises:
        ParameterError: not JSON, not a list of objects, or an update without ``full_name``
            (the message names the update's position, counting from 1).
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"--model-updates is not JSON ({exc}); pass {{{{job.trigger.model.updates}}}}") from None
    if not isinstance(document, list):
        raise ParameterError("--model-updates must be a JSON list of updates")
    updates = []
    for position, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            raise ParameterError(f"--model-updates: update #{position} is not a JSON object")
        full_name = _text(item, "full_name", position)
        if not full_name:
            raise ParameterError(f"--model-updates: update #{position} has no 'full_name'")
        alias = _text(item, "alias_name", position)
        updates.append(ModelUpdate(full_name, _text(item, "version", position), alias))
    return updates


def distinct_updates(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """The updates in order, each listed once.

    The same (model, version, alias) twice in one batch is one state to act on: the job a
    pipeline run starts re-checks that the alias still points at the version, so a second
    delivery would only start a second run for the same thing.
    """
    return list(dict.fromkeys(updates))

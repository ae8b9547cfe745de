"""Catch-up's pure parts: which models the rules can match, and the event a missed move would
have been. No I/O.

A catch-up event is what the sender would have sent for the state the registry shows now:
``model_version_alias.created`` (MLflow format, as open-source MLflow and the Unity Catalog
bridge send it) or ``MODEL_VERSION_TRANSITIONED_TO_<STAGE>`` (Databricks). Its time is when
catch-up looked; a Databricks ``from_stage`` is unknown (the registry keeps no history), so
rules with a ``from_stage`` condition are never caught up and the report says so.

Its delivery id is derived from the state and from the marks it replaces, so two catch-ups
deciding the same move derive the same id (the ledger keeps them to one run), while the same
state reached again later (champion 7 → 8 → 7) gets a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

from relay.registries import ModelFilter, ObservedState
from relay.state_marks import StateMark
from webhook.events import EventKind, RegistryEvent
from webhook.rules import RouteRule, RouteRules

ALIAS_EVENT = "model_version_alias.created"
_STAGE_EVENTS = {
    "staging": "MODEL_VERSION_TRANSITIONED_TO_STAGING",
    "production": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "archived": "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
}
GENERIC_STAGE_EVENT = "MODEL_VERSION_TRANSITIONED_STAGE"
# The sender format each registry kind's catch-up events take.
SOURCE_OF_KIND = {"mlflow": "mlflow", "unity-catalog": "mlflow", "databricks": "databricks"}


def stage_event_name(stage: str) -> str:
    return _STAGE_EVENTS.get(stage.casefold(), GENERIC_STAGE_EVENT)


def could_match_states(rule: RouteRule, kind: str) -> bool:
    """Whether ``rule`` can match a catch-up event of a registry of ``kind`` at all."""
    when = rule.when
    source = SOURCE_OF_KIND[kind]
    if when.tag is not None or (when.source is not None and source not in {s.casefold() for s in when.source}):
        return False
    names = {ALIAS_EVENT.upper()} if source == "mlflow" else {GENERIC_STAGE_EVENT, *_STAGE_EVENTS.values()}
    if when.event is not None and not names & {e.upper() for e in when.event}:
        return False
    if source == "mlflow":
        return when.to_stage is None and when.from_stage is None
    return when.alias is None


def models_for(rules: RouteRules, kind: str) -> ModelFilter:
    """The models catch-up must read for ``kind``: what the rules that can match name."""
    names: set[str] = set()
    patterns: list[str] = []
    for rule in rules.rules:
        if not could_match_states(rule, kind):
            continue
        if rule.when.model is None:
            return ModelFilter(any=True)
        for model in rule.when.model:
            if any(c in model for c in "*?["):
                patterns.append(model)
            else:
                names.add(model)
    return ModelFilter(frozenset(names), tuple(patterns))


def synthetic_event(state: ObservedState, *, observed_at: float, delivery_id: str) -> RegistryEvent:
    """The event the sender would have sent for ``state``."""
    when = datetime.fromtimestamp(observed_at, tz=UTC)
    if state.alias is not None:
        return RegistryEvent(
            source="mlflow",
            event=ALIAS_EVENT,
            kind=EventKind.ALIAS_SET,
            model_name=state.model,
            version=state.version,
            alias=state.alias,
            delivery_id=delivery_id,
            event_time=when,
        )
    stage = state.stage or ""
    return RegistryEvent(
        source="databricks",
        event=stage_event_name(stage),
        kind=EventKind.STAGE_TRANSITIONED,
        model_name=state.model,
        version=state.version,
        to_stage=stage,
        delivery_id=delivery_id,
        event_time=when,
    )


def catch_up_delivery_id(state: ObservedState, replaced: Mapping[str, StateMark | None]) -> str:
    """``catch-up-<digest>`` of the state and of the marks (by rule) this move replaces."""
    previous = ",".join(f"{rule}={mark.delivery_id if mark else '-'}" for rule, mark in sorted(replaced.items()))
    identity = "\x1f".join([state.source, state.model, state.selector, state.version, previous])
    return "catch-up-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def from_stage_rules(rules: RouteRules, event: RegistryEvent) -> list[str]:
    """Rules that would match ``event`` but for their ``from_stage`` condition (never caught up)."""
    found = []
    for rule in rules.rules:
        if rule.when.from_stage is None:
            continue
        relaxed = rule.model_copy(update={"when": rule.when.model_copy(update={"from_stage": None})})
        if relaxed.matches(event):
            found.append(rule.name)
    return found

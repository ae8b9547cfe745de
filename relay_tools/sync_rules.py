"""What each sender must be told so that it delivers what ``routes.yaml`` can match (pure, no I/O).

For every rule, the events of a sender the rule could match, from its ``when`` conditions, and
for Unity Catalog the model update triggers (condition, scope, aliases) that report them. Each
function returns what is wanted and notes: one line per thing a rule asks for that cannot be
registered, naming the rule.

Tag events are never registered for a rule that could match the job's own ``deployment.*`` and
``validation.*`` tags (the job writes them on every version it handles): the pipeline would
start itself again, and again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from webhook.errors import ConfigurationError
from webhook.events import DATABRICKS_EVENTS, MLFLOW_EVENTS, EventKind
from webhook.rules import RouteRule, RouteRules

MAX_TRIGGER_ALIASES = 10  # Databricks: at most 10 aliases per model update trigger
GENERIC_TRANSITION = "MODEL_VERSION_TRANSITIONED_STAGE"
_STAGE_EVENTS = {
    "staging": "MODEL_VERSION_TRANSITIONED_TO_STAGING",
    "production": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "archived": "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
}
_TAG_KINDS = frozenset({EventKind.TAG_SET, EventKind.TAG_DELETED})
_ALIAS_KINDS = frozenset({EventKind.ALIAS_SET, EventKind.ALIAS_DELETED})
_UC_CONDITIONS = {
    "registered_model.created": "MODEL_CREATED",
    "model_version.created": "MODEL_VERSION_READY",
    "model_version_alias.created": "MODEL_ALIAS_SET",
}
_ALIAS_EVENT = "model_version_alias.created"


@dataclass(frozen=True)
class TriggerSpec:
    """One model update trigger: its condition, what it watches ("" = the metastore), its aliases."""

    condition: str
    securable: str
    aliases: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return self.securable or "metastore"


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _for_source(rule: RouteRule, source: str) -> bool:
    return rule.when.source is None or source in {s.casefold() for s in rule.when.source}


def _kind_fits(kind: EventKind, rule: RouteRule) -> bool:
    """Could an event of ``kind`` satisfy the rule's alias and tag conditions?"""
    when = rule.when
    if when.alias is not None and kind not in _ALIAS_KINDS:
        return False
    if when.tag is not None:
        return kind is EventKind.TAG_SET or (kind is EventKind.TAG_DELETED and when.tag.value is None)
    return True


def _in_order(names: Iterable[str], order: Iterable[str]) -> tuple[str, ...]:
    wanted, known = set(names), list(order)
    return tuple([n for n in known if n in wanted] + sorted(wanted - set(known)))


def _in_workspace(rule: RouteRule, workspace: str | None, notes: list[str]) -> bool:
    patterns = rule.when.workspace
    if patterns is None or (workspace and any(fnmatch.fnmatchcase(workspace, p) for p in patterns)):
        return True
    where = f"workspace {workspace!r}" if workspace else "a server without workspaces (MLFLOW_WORKSPACE unset)"
    notes.append(f"rule {rule.name!r} is for workspace {', '.join(patterns)}: nothing to register on {where}")
    return False


def mlflow_events(rules: RouteRules, *, workspace: str | None) -> tuple[tuple[str, ...], list[str]]:
    """The MLflow 3 webhook events the rules can match in ``workspace`` (None: no workspaces).

    Tag events are safe to register: routing never matches the job's own ``deployment.*`` and
    ``validation.*`` tags, and refuses a rule that names them (``webhook.rules``).
    """
    notes: list[str] = []
    wanted: set[str] = set()
    for rule in rules.rules:
        when = rule.when
        if not _for_source(rule, "mlflow") or when.to_stage is not None or when.from_stage is not None:
            continue
        if not _in_workspace(rule, workspace, notes):
            continue
        names = list(MLFLOW_EVENTS) if when.event is None else [e.lower() for e in when.event if "." in e]
        names = [n for n in names if _kind_fits(MLFLOW_EVENTS.get(n, EventKind.OTHER), rule)]
        wanted.update(names)
    return _in_order(wanted, MLFLOW_EVENTS), notes


def _databricks_names(rule: RouteRule) -> list[str]:
    when = rule.when
    staged = when.to_stage is not None or when.from_stage is not None
    if when.event is not None:
        named = [e.upper() for e in when.event if e.upper() in DATABRICKS_EVENTS]
        stage_kinds = (EventKind.STAGE_TRANSITIONED, EventKind.TRANSITION_REQUESTED)
        named = [n for n in named if not staged or DATABRICKS_EVENTS[n] in stage_kinds]
        return [n for n in named if _kind_fits(DATABRICKS_EVENTS[n], rule)]
    if when.tag is not None:
        return [] if staged else ["MODEL_VERSION_TAG_SET"]
    if staged:
        specific = [_STAGE_EVENTS.get(s.casefold()) for s in when.to_stage or ["None"]]
        return sorted({s for s in specific if s}) if all(specific) else [GENERIC_TRANSITION]
    return ["REGISTERED_MODEL_CREATED", "MODEL_VERSION_CREATED", GENERIC_TRANSITION, "MODEL_VERSION_TAG_SET"]


def _without_covered_transitions(events: set[str], covering: set[str]) -> set[str]:
    if GENERIC_TRANSITION in events | covering:
        events = events - set(_STAGE_EVENTS.values())
    return events - covering


def databricks_webhooks(rules: RouteRules) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Workspace registry webhooks: model name ("" = registry-wide) → events.

    A model glob, or no model condition, needs the registry-wide webhook (the relay filters);
    a per-model webhook is only kept for events the registry-wide one does not already send.
    """
    notes: list[str] = []
    wanted: dict[str, set[str]] = {}
    for rule in rules.rules:
        when = rule.when
        if not _for_source(rule, "databricks") or when.alias is not None or when.workspace is not None:
            continue
        names = _databricks_names(rule)
        models = [""] if when.model is None else ["" if _is_glob(p) else p for p in when.model]
        for model in models:
            wanted.setdefault(model, set()).update(names)
    registry_wide = _without_covered_transitions(wanted.pop("", set()), set())
    result = {"": registry_wide} if registry_wide else {}
    for model, events in sorted(wanted.items()):
        if remaining := _without_covered_transitions(events, registry_wide):
            result[model] = remaining
    return {m: _in_order(e, DATABRICKS_EVENTS) for m, e in result.items()}, notes


def _uc_scope(rule: RouteRule, pattern: str | None, notes: list[str]) -> str | None:
    """What a trigger must watch for one model pattern: model, schema, or "" (metastore); None: nothing."""
    if pattern is None or pattern == "*":
        return ""
    parts = pattern.split(".")
    if len(parts) != 3:
        notes.append(f"rule {rule.name!r}: model {pattern!r} is not a Unity Catalog full name (catalog.schema.model)")
        return None
    if pattern != pattern.lower():
        notes.append(f"rule {rule.name!r}: model {pattern!r} has capitals; Unity Catalog names are lower case")
    if not any(_is_glob(p) for p in parts):
        return pattern
    return "" if _is_glob(parts[0]) or _is_glob(parts[1]) else f"{parts[0]}.{parts[1]}"


def _uc_events(rule: RouteRule, notes: list[str]) -> list[str]:
    """The MLflow events of a rule that a model update trigger can report, through the bridge."""
    when = rule.when
    if when.tag is not None:
        notes.append(f"rule {rule.name!r}: model update triggers report no tag changes; not bridged")
        return []
    names = list(_UC_CONDITIONS) if when.event is None else [e.lower() for e in when.event if "." in e]
    if unreported := [n for n in names if n not in _UC_CONDITIONS]:
        notes.append(f"rule {rule.name!r}: model update triggers do not report {', '.join(unreported)}")
    names = [n for n in names if n in _UC_CONDITIONS and (when.alias is None or n == _ALIAS_EVENT)]
    if _ALIAS_EVENT in names and when.alias is None:
        notes.append(f"rule {rule.name!r} matches any alias; a trigger watches named aliases: add when.alias")
        names.remove(_ALIAS_EVENT)
    return names


def uc_triggers(rules: RouteRules) -> tuple[list[TriggerSpec], list[str]]:
    """The model update triggers (one bridge job each) the rules need, narrowest scopes that cover them.

    Raises:
        ConfigurationError: one trigger would need more than ``MAX_TRIGGER_ALIASES`` aliases.
    """
    notes: list[str] = []
    wanted: dict[str, dict[str, set[str]]] = {}  # condition -> scope -> aliases
    for rule in rules.rules:
        when = rule.when
        staged = when.to_stage is not None or when.from_stage is not None
        # The bridge's deliveries carry no workspace, so a rule with a workspace condition never matches one.
        if not _for_source(rule, "mlflow") or staged or when.workspace is not None:
            continue
        events = _uc_events(rule, notes)
        patterns: list[str | None] = list(when.model) if when.model is not None else [None]
        scopes = [_uc_scope(rule, p, notes) for p in patterns]
        for event in events:
            for scope in (s for s in scopes if s is not None):
                aliases = wanted.setdefault(_UC_CONDITIONS[event], {}).setdefault(scope, set())
                if event == _ALIAS_EVENT:
                    aliases.update(when.alias or [])
    triggers = [t for condition, scopes in sorted(wanted.items()) for t in _merge(condition, scopes)]
    return triggers, notes


def _merge(condition: str, scopes: dict[str, set[str]]) -> list[TriggerSpec]:
    def covering(scope: str) -> str:
        if "" in scopes:
            return ""
        schema = scope.rpartition(".")[0] if scope.count(".") == 2 else ""
        return schema if schema in scopes else scope

    merged: dict[str, set[str]] = {}
    for scope, aliases in scopes.items():
        merged.setdefault(covering(scope), set()).update(aliases)
    triggers = []
    for scope, aliases in sorted(merged.items()):
        if len(aliases) > MAX_TRIGGER_ALIASES:
            raise ConfigurationError(
                f"the {condition} trigger on {scope or 'the metastore'} would watch {len(aliases)} aliases; "
                f"Databricks allows {MAX_TRIGGER_ALIASES}: narrow the rules' model patterns"
            )
        triggers.append(TriggerSpec(condition, scope, tuple(sorted(aliases))))
    return triggers

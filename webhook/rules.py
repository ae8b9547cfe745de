"""Routing rules: the rules document (``routes.yaml``), validated, and whether a rule matches
an event. Pure, no I/O.

A rules document holds ``rules:``; every rule whose ``when`` conditions all hold fires, each
into one pipeline run (fan-out, ``webhook.routing``). See README "Routing rules".
"""

from __future__ import annotations

import fnmatch
import string
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook.errors import ConfigurationError
from webhook.events import KINDS_NEEDING_EXPLICIT_EVENT, EventKind, RegistryEvent

PLACEHOLDERS = frozenset(
    {
        "model_name",
        "version",
        "event",
        "from_stage",
        "to_stage",
        "alias",
        "source",
        "delivery_id",
        "event_time",
        "tag_key",
        "tag_value",
        "workspace",
    }
)

# Tag keys the deployment itself writes on the model version (databricks_job/, pipelines/). A rule
# that fired on them would start the pipeline again after every run, so no rule may name them and
# no tag event carrying one is ever routed, whatever the rule's other conditions say.
RESERVED_TAG_PREFIXES = ("deployment.", "validation.")
_TAG_KINDS = frozenset({EventKind.TAG_SET, EventKind.TAG_DELETED})


def is_reserved_tag(key: str | None) -> bool:
    """True for a tag key the deployment writes itself (``deployment.*``, ``validation.*``)."""
    return bool(key) and str(key).casefold().startswith(RESERVED_TAG_PREFIXES)


def _as_list(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    return [value]


def _scalar_text(value: Any) -> Any:
    # YAML reads `true` and `3` as bool/int; conditions compare text, as the senders send it.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class TagCondition(BaseModel):
    """``tag: {key: deploy, value: "true"}``; ``value`` is optional (any value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    value: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _scalar_text(value)

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, key: str) -> str:
        if is_reserved_tag(key):
            raise ValueError(
                f"tag key {key!r} is reserved: the deployment job writes {', '.join(RESERVED_TAG_PREFIXES)}* "
                "tags itself, so this rule would start the pipeline again after every run"
            )
        return key


class RuleConditions(BaseModel):
    """Every condition given must hold; each takes one value or a list of values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: list[str] | None = None
    source: list[str] | None = None
    model: list[str] | None = None
    to_stage: list[str] | None = None
    from_stage: list[str] | None = None
    alias: list[str] | None = None
    tag: TagCondition | None = None
    workspace: list[str] | None = None  # fnmatch globs on an MLflow 3.18 delivery's ``workspace``

    @field_validator("event", "source", "model", "to_stage", "from_stage", "alias", "workspace", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        listed = _as_list(value)
        return [_scalar_text(v) for v in listed] if listed is not None else None


class RouteRule(BaseModel):
    """One rule: conditions, the pipeline to run, and its template parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pipeline_id: int = Field(gt=0)
    project: str | None = Field(None, min_length=1)
    branch: str | None = Field(None, min_length=1)
    when: RuleConditions = Field(default_factory=RuleConditions)
    parameters: dict[str, str] | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameter_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): _scalar_text(v) for k, v in value.items()}
        return value

    @field_validator("parameters")
    @classmethod
    def _known_placeholders(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, template in (value or {}).items():
            for field in _placeholder_names(template, name):
                if field not in PLACEHOLDERS:
                    known = ", ".join(sorted(PLACEHOLDERS))
                    raise ValueError(f"parameter {name!r}: unknown placeholder {{{field}}} (known: {known})")
        return value

    def matches(self, event: RegistryEvent) -> bool:
        """True when every condition of this rule holds for ``event``."""
        when = self.when
        if event.kind in _TAG_KINDS and is_reserved_tag(event.tag_key):
            return False  # the deployment's own tags never start anything (no retrigger loop)
        if when.event is None:
            if event.kind in KINDS_NEEDING_EXPLICIT_EVENT:
                return False
        elif not event.event_names & {e.upper() for e in when.event}:
            return False
        if event.is_test and not (when.model and event.model_name in when.model):
            return False  # a sender's test payload fires only rules that name its model
        return (
            _in(event.source, when.source)
            and _glob_in(event.model_name, when.model)
            and _glob_in(event.workspace, when.workspace)
            and _in(event.to_stage, when.to_stage)
            and _in(event.from_stage, when.from_stage)
            and _in(event.alias, when.alias, case_sensitive=True)
            and _tag_matches(event, when.tag)
        )


def _placeholder_names(template: str, parameter: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"parameter {parameter!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            # Only bare names: attribute/index access in a format string can reach internals.
            raise ValueError(f"parameter {parameter!r}: placeholder {{{field}}} must be a bare name")
        names.append(field)
    return names


def _glob_in(value: str | None, patterns: list[str] | None) -> bool:
    if patterns is None:
        return True
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _in(value: str | None, allowed: list[str] | None, *, case_sensitive: bool = False) -> bool:
    if allowed is None:
        return True
    if value is None:
        return False
    if case_sensitive:
        return value in allowed
    return value.casefold() in {a.casefold() for a in allowed}


def _tag_matches(event: RegistryEvent, tag: TagCondition | None) -> bool:
    if tag is None:
        return True
    if event.tag_key != tag.key:
        return False
    return tag.value is None or event.tag_value == tag.value


class RouteRules(BaseModel):
    """The whole rules document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[RouteRule]

    @model_validator(mode="after")
    def _unique_names(self) -> RouteRules:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice; names must be unique")
            seen.add(rule.name)
        return self


def parse_rules(text: str, *, origin: str = "routes.yaml") -> RouteRules:
    """Parse and validate a YAML rules document.

    Raises:
        ConfigurationError: bad YAML, or a schema error naming the rule and field.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return RouteRules.model_validate(document)
    except ValidationError as exc:
        raise ConfigurationError(_describe_rules_error(origin, document, exc)) from None


def _describe_rules_error(origin: str, document: Any, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "document"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = document.get("rules") if isinstance(document, dict) else None
            rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
            name = rule.get("name") if isinstance(rule, dict) else None
            field = ".".join(str(p) for p in loc[2:]) or "rule"
            where = f"rule {name!r} (#{loc[1] + 1}) field '{field}'" if name else f"rule #{loc[1] + 1} field '{field}'"
        problems.append(f"{where}: {err['msg']}")
    return f"{origin}: " + "; ".join(problems)

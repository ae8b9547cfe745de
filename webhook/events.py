"""Event payloads of both senders, validated with pydantic, and the one normalised event.

Databricks (workspace Model Registry) sends a flat JSON body with an upper-case ``event``;
open-source MLflow sends ``{"entity", "action", "timestamp", "data"}``. Both become a
``RegistryEvent`` that routing matches on. Parsing is pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webhook.errors import PayloadInvalid


class EventKind(StrEnum):
    """What happened, independent of the sender's vocabulary."""

    MODEL_CREATED = "model_created"
    VERSION_CREATED = "version_created"
    STAGE_TRANSITIONED = "stage_transitioned"
    TRANSITION_REQUESTED = "transition_requested"
    COMMENT_CREATED = "comment_created"
    TAG_SET = "tag_set"
    TAG_DELETED = "tag_deleted"
    ALIAS_SET = "alias_set"
    ALIAS_DELETED = "alias_deleted"
    OTHER = "other"  # events we accept and never route by default (e.g. MLflow prompt events)


# Kinds a rule without an explicit ``event`` condition never matches: a *request* to move a
# model to Production, or a comment, must not deploy anything unless a rule names it.
KINDS_NEEDING_EXPLICIT_EVENT = frozenset({EventKind.TRANSITION_REQUESTED, EventKind.COMMENT_CREATED, EventKind.OTHER})

DATABRICKS_EVENTS: dict[str, EventKind] = {
    "MODEL_VERSION_CREATED": EventKind.VERSION_CREATED,
    "MODEL_VERSION_TRANSITIONED_STAGE": EventKind.STAGE_TRANSITIONED,
    "MODEL_VERSION_TRANSITIONED_TO_STAGING": EventKind.STAGE_TRANSITIONED,
    "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION": EventKind.STAGE_TRANSITIONED,
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED": EventKind.STAGE_TRANSITIONED,
    "TRANSITION_REQUEST_CREATED": EventKind.TRANSITION_REQUESTED,
    "TRANSITION_REQUEST_TO_STAGING_CREATED": EventKind.TRANSITION_REQUESTED,
    "TRANSITION_REQUEST_TO_PRODUCTION_CREATED": EventKind.TRANSITION_REQUESTED,
    "TRANSITION_REQUEST_TO_ARCHIVED_CREATED": EventKind.TRANSITION_REQUESTED,
    "COMMENT_CREATED": EventKind.COMMENT_CREATED,
    "REGISTERED_MODEL_CREATED": EventKind.MODEL_CREATED,
    "MODEL_VERSION_TAG_SET": EventKind.TAG_SET,
}

# The specific events are the generic one seen through a filter: a rule naming the generic
# event matches them too, and they share one delivery id.
_GENERIC_DATABRICKS_EVENT = {
    EventKind.STAGE_TRANSITIONED: "MODEL_VERSION_TRANSITIONED_STAGE",
    EventKind.TRANSITION_REQUESTED: "TRANSITION_REQUEST_CREATED",
}

MLFLOW_EVENTS: dict[str, EventKind] = {
    "registered_model.created": EventKind.MODEL_CREATED,
    "model_version.created": EventKind.VERSION_CREATED,
    "model_version_tag.set": EventKind.TAG_SET,
    "model_version_tag.deleted": EventKind.TAG_DELETED,
    "model_version_alias.created": EventKind.ALIAS_SET,
    "model_version_alias.deleted": EventKind.ALIAS_DELETED,
}

# MLflow's ``test_webhook`` sends its documented example payload for this model name.
MLFLOW_TEST_MODEL_NAME = "example_model"


class RegistryEvent(BaseModel):
    """One registry event, normalised across senders; what routing matches on."""

    model_config = ConfigDict(frozen=True)

    source: Literal["databricks", "mlflow"]
    event: str  # the sender's own name, e.g. MODEL_VERSION_TRANSITIONED_TO_PRODUCTION
    kind: EventKind
    model_name: str
    version: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    alias: str | None = None
    tag_key: str | None = None
    tag_value: str | None = None
    delivery_id: str
    event_time: datetime
    is_test: bool = False
    workspace: str | None = None  # MLflow 3.18+ with workspaces enabled; no other sender sends one

    @property
    def event_names(self) -> frozenset[str]:
        """Every name a rule's ``event`` condition may use for this event (upper-cased)."""
        names = {self.event.upper()}
        generic = _GENERIC_DATABRICKS_EVENT.get(self.kind) if self.source == "databricks" else None
        if generic:
            names.add(generic)
        return frozenset(names)


def _decode_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadInvalid(f"body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadInvalid("body must be a JSON object")
    return document


def _schema_error(exc: ValidationError) -> PayloadInvalid:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return PayloadInvalid(f"invalid payload: field '{field}': {first['msg']}")


# The sender payload models build their validators on first use (``defer_build``), so an
# instance that only hears from one sender never pays for the other's on its cold start.
# pydantic serialises that first build under a lock (the host calls handlers from threads).
_PAYLOAD_CONFIG = ConfigDict(extra="ignore", defer_build=True)


class _TagPair(BaseModel):
    model_config = _PAYLOAD_CONFIG  # extra="ignore" is pydantic's default anyway

    key: str
    value: str | None = None


class DatabricksPayload(BaseModel):
    """A Databricks workspace registry webhook body; unknown fields are ignored."""

    model_config = _PAYLOAD_CONFIG

    event: str
    webhook_id: str = Field(min_length=1)
    # Bounded so a signed but absurd value is a 400, not a datetime overflow (9999-12-31).
    event_timestamp: int = Field(gt=0, le=253_402_300_799_999, description="milliseconds since the epoch")
    model_name: str = Field(min_length=1)
    version: str | None = None
    to_stage: str | None = None
    from_stage: str | None = None
    text: str | None = None
    comment: str | None = None
    tags: list[_TagPair] = Field(default_factory=list)

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in DATABRICKS_EVENTS:
            raise ValueError(f"unknown Databricks event type {value!r}")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_pairs(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{"key": k, "value": v} for k, v in value.items()]
        return [] if value is None else value


def derive_databricks_delivery_id(payload: DatabricksPayload) -> str:
    """A stable id for a Databricks event, which carries none of its own.

    Built from the signed body's identifying fields, with the generic event name so the
    generic and the specific transition deliveries of one change share it.
    """
    kind = DATABRICKS_EVENTS[payload.event]
    identity = [
        _GENERIC_DATABRICKS_EVENT.get(kind, payload.event),
        payload.model_name,
        payload.version or "",
        payload.from_stage or "",
        payload.to_stage or "",
        str(payload.event_timestamp),
        ",".join(f"{t.key}={t.value}" for t in payload.tags),
        payload.comment or "",
    ]
    digest = hashlib.sha256("\x1f".join(identity).encode("utf-8")).hexdigest()
    return f"dbx-{digest[:40]}"


def parse_databricks_event(body: bytes) -> RegistryEvent:
    """Parse an already verified Databricks body into a ``RegistryEvent``.

    Raises:
        PayloadInvalid: malformed JSON or a schema error, naming the field.
    """
    try:
        payload = DatabricksPayload.model_validate(_decode_json_object(body))
    except ValidationError as exc:
        raise _schema_error(exc) from None
    first_tag = payload.tags[0] if payload.tags else None
    return RegistryEvent(
        source="databricks",
        event=payload.event,
        kind=DATABRICKS_EVENTS[payload.event],
        model_name=payload.model_name,
        version=payload.version,
        from_stage=payload.from_stage,
        to_stage=payload.to_stage,
        tag_key=first_tag.key if first_tag else None,
        tag_value=first_tag.value if first_tag else None,
        delivery_id=derive_databricks_delivery_id(payload),
        event_time=datetime.fromtimestamp(payload.event_timestamp / 1000, tz=UTC),
    )


class MlflowPayload(BaseModel):
    """An open-source MLflow webhook body (``entity``, ``action``, ``timestamp``, ``data``)."""

    model_config = _PAYLOAD_CONFIG

    entity: str = Field(min_length=1)
    action: str = Field(min_length=1)
    timestamp: datetime
    data: dict[str, Any]
    workspace: str | None = None  # top-level, next to ``data``, when the server has workspaces enabled


class _MlflowModelData(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, defer_build=True)

    name: str = Field(min_length=1)
    version: str | None = None
    alias: str | None = None
    key: str | None = None
    value: str | None = None


def parse_mlflow_event(body: bytes, *, delivery_id: str) -> RegistryEvent:
    """Parse an already verified MLflow body into a ``RegistryEvent``.

    Prompt events (and any entity MLflow adds later) parse as ``EventKind.OTHER`` so they
    are acknowledged and ignored rather than rejected.

    Raises:
        PayloadInvalid: malformed JSON or a schema error, naming the field.
    """
    try:
        payload = MlflowPayload.model_validate(_decode_json_object(body))
        event = f"{payload.entity}.{payload.action}"
        kind = MLFLOW_EVENTS.get(event, EventKind.OTHER)
        if kind is EventKind.OTHER:
            data = _MlflowModelData.model_validate({"name": str(payload.data.get("name") or "-")})
        else:
            data = _MlflowModelData.model_validate(payload.data)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    if kind in (EventKind.VERSION_CREATED, EventKind.TAG_SET, EventKind.TAG_DELETED) and not data.version:
        raise PayloadInvalid(f"invalid payload: field 'data.version' is required for {event}")
    if kind in (EventKind.ALIAS_SET, EventKind.ALIAS_DELETED) and not data.alias:
        raise PayloadInvalid(f"invalid payload: field 'data.alias' is required for {event}")
    event_time = payload.timestamp
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    return RegistryEvent(
        source="mlflow",
        event=event,
        kind=kind,
        model_name=data.name,
        version=data.version,
        alias=data.alias,
        tag_key=data.key,
        tag_value=data.value,
        delivery_id=delivery_id,
        event_time=event_time,
        is_test=data.name == MLFLOW_TEST_MODEL_NAME,
        workspace=payload.workspace or None,
    )

"""Build a signed webhook request in open-source MLflow's format (pure, no I/O).

Unity Catalog models have no registry webhooks, so the UC bridge sends the relay what an
MLflow 3 server would: the same JSON envelope, the same ``X-MLflow-*`` headers, the same
``v1,`` HMAC signature. The relay then routes UC events with the rules it already has.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from webhook.signatures import mlflow_signed_headers

# The events the bridge can emit, with the data fields MLflow sends for each.
SUPPORTED_EVENTS = ("model_version_alias.created", "model_version.created", "registered_model.created")
# Namespace for delivery ids derived from a job run: stable across retries of the same task.
_DELIVERY_NAMESPACE = uuid.UUID("6f1c9d1e-4a57-4c36-9d53-3c1f4b2a8e10")


@dataclass(frozen=True)
class SignedRequest:
    """Exactly the bytes and headers to POST; retries resend them unchanged."""

    body: bytes
    headers: dict[str, str]
    delivery_id: str


def alias_created_data(*, name: str, alias: str, version: str) -> dict[str, object]:
    """``data`` of ``model_version_alias.created``."""
    return {"name": name, "alias": alias, "version": version}


def version_created_data(
    *,
    name: str,
    version: str,
    source: str,
    run_id: str | None,
    tags: Mapping[str, str],
    description: str | None,
) -> dict[str, object]:
    """``data`` of ``model_version.created``."""
    return {
        "name": name,
        "version": version,
        "source": source,
        "run_id": run_id,
        "tags": dict(tags),
        "description": description,
    }


def registered_model_created_data(*, name: str, tags: Mapping[str, str], description: str | None) -> dict[str, object]:
    """``data`` of ``registered_model.created``."""
    return {"name": name, "tags": dict(tags), "description": description}


def derived_delivery_id(event: str, data: Mapping[str, object], *, job_run_id: str) -> str:
    """A uuid derived from what the event is about, never from when it is sent.

    The identity is the job run, the event and the model, version and alias, and nothing read
    from the registry that can change (tags, description): a repaired or retried task sends
    the same id again, so the relay answers ``duplicate`` instead of starting a second run;
    two different updates, or the same update seen by two trigger runs, get different ids.
    """
    identity = [job_run_id, event, data.get("name"), data.get("version"), data.get("alias")]
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, json.dumps(identity)))


def delivery_id_for(event: str, data: Mapping[str, object], *, job_run_id: str = "") -> str:
    """The single-event bridge's id: derived from the job run when given (see
    ``derived_delivery_id``), random otherwise, as for a hand-run test delivery."""
    if not job_run_id:
        return str(uuid.uuid4())
    return derived_delivery_id(event, data, job_run_id=job_run_id)


def build_signed_request(
    event: str,
    data: Mapping[str, object],
    *,
    secret: str,
    delivery_id: str,
    now: datetime,
) -> SignedRequest:
    """Serialise and sign one event the way MLflow 3.17 does.

    Args:
        event: ``entity.action``, one of ``SUPPORTED_EVENTS``.
        now: an aware UTC datetime; its ISO form goes in the body, its unix seconds in the header.

    Raises:
        ValueError: an unsupported event, or a naive ``now``.
    """
    if event not in SUPPORTED_EVENTS:
        raise ValueError(f"unsupported event {event!r}; expected one of {', '.join(SUPPORTED_EVENTS)}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    entity, _, action = event.partition(".")
    envelope = {"entity": entity, "action": action, "timestamp": now.isoformat(), "data": dict(data)}
    # Default separators on purpose: byte-for-byte the layout MLflow's json.dumps produces.
    body = json.dumps(envelope).encode("utf-8")
    timestamp = str(int(now.timestamp()))
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)
    return SignedRequest(body=body, headers=headers, delivery_id=delivery_id)

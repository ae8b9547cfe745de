"""The one place where outcomes and errors become HTTP answers, one shape per outcome.

Every answer is JSON with ``status`` and ``detail``; answers about an event add its ids
(``delivery_id``, ``event``, ``model``, ``version``) and ``runs``; error answers add
``error`` (the class) and, for a 500, an ``error_id`` that the log line carries too, so an
operator finds the cause while the caller learns nothing about the configuration.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.decisions import log_decision
from relay.ports import DependencyUnavailable, PipelineRun
from webhook.errors import ConfigurationError, MethodNotAllowed, RelayError, RequestRejected
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest


@dataclass(frozen=True)
class RelayResponse:
    """An HTTP answer independent of the hosting framework."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one rule's run.

    ``status``: triggered | duplicate | queued | in_progress | refused | unavailable.
    """

    request: PipelineRunRequest
    status: str
    run: PipelineRun | None = None
    detail: str = ""
    retry_after: int = 0


def json_response(status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> RelayResponse:
    return RelayResponse(status, body, {"Content-Type": "application/json", **(headers or {})})


def event_summary(event: RegistryEvent) -> dict[str, object]:
    """The event's ids as every answer about it shows them."""
    return {"delivery_id": event.delivery_id, "event": event.event, "model": event.model_name, "version": event.version}


def ignored_answer(event: RegistryEvent) -> RelayResponse:
    if event.is_test:
        detail = f"test delivery for {event.model_name!r}: no rule names this model, nothing started"
    else:
        detail = f"no rule matches {event.event} for model {event.model_name!r}"
    return json_response(200, {"status": "ignored", "detail": detail, **event_summary(event), "runs": []})


def dry_run_answer(event: RegistryEvent, requests: list[PipelineRunRequest]) -> RelayResponse:
    planned = [
        {
            "rule": r.rule,
            "project": r.project,
            "pipeline_id": r.pipeline_id,
            "branch": r.branch,
            "parameters": r.template_parameters,
        }
        for r in requests
    ]
    body = {
        "status": "dry-run",
        "detail": "dry run: nothing was sent to Azure DevOps",
        **event_summary(event),
        "runs": planned,
    }
    return json_response(200, body)


# The worst outcome decides the answer: (status word, HTTP status, detail when none is given).
# "Retry later" comes before a refusal: a rule that needs the sender's retry must get it, and a
# refused rule answers the same refusal to that retry without posting again.
_PRECEDENCE: tuple[tuple[str, int, str], ...] = (
    ("unavailable", 503, "Azure DevOps is unavailable; retry later"),
    ("in_progress", 503, "another attempt holds this delivery right now; retry later"),
    ("refused", 424, "Azure DevOps refused the run"),
    ("queued", 202, "Azure DevOps is unavailable; the run will be retried from the queue"),
    ("triggered", 200, ""),
    ("duplicate", 200, "already triggered by an earlier delivery"),
)


def outcomes_answer(event: RegistryEvent, outcomes: list[RunOutcome]) -> RelayResponse:
    """Fold per-rule outcomes into one answer: the worst outcome decides the status."""
    runs = [o.run.as_dict() for o in outcomes if o.run is not None]
    for word, status, default in _PRECEDENCE:
        worst = [o for o in outcomes if o.status == word]
        if not worst:
            continue
        detail = "; ".join(dict.fromkeys(o.detail for o in worst if o.detail)) or default
        body: dict[str, Any] = {"status": word, "detail": detail, **event_summary(event), "runs": runs}
        if word in ("queued", "in_progress", "unavailable"):
            body["pending"] = [o.request.rule for o in worst]
        headers = {"Retry-After": str(max(o.retry_after for o in worst) or 30)} if status == 503 else None
        return json_response(status, body, headers=headers)
    raise ValueError("no outcome to answer")


def error_answer(exc: RelayError, *, error_id: str | None = None) -> RelayResponse:
    """Map any ``RelayError`` to its status, a reason, and the headers its status needs.

    A configuration error answers a generic reason: its detail is for the operator's log.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, DependencyUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = "POST"
    if isinstance(exc, RequestRejected):
        word, detail = "rejected", exc.detail
    elif isinstance(exc, DependencyUnavailable):
        word, detail = "unavailable", exc.detail
    elif isinstance(exc, ConfigurationError):
        word, detail = "error", "the relay is misconfigured; an operator can find the cause by its error_id"
    else:
        word, detail = ("refused", exc.detail) if int(exc.status) == 424 else ("error", "internal error")
    body: dict[str, Any] = {"status": word, "error": type(exc).__name__, "detail": detail}
    if error_id:
        body["error_id"] = error_id
    return json_response(int(exc.status), body, headers=headers)


def internal_error_answer(error_id: str) -> RelayResponse:
    """A bug: say so without a traceback (the log has it, under ``error_id``)."""
    body = {
        "status": "error",
        "error": "InternalError",
        "detail": "internal error; see the relay's logs",
        "error_id": error_id,
    }
    return json_response(500, body)


def answered(
    produce: Callable[[], RelayResponse],
    *,
    ids: Mapping[str, object] | None = None,
    rejected: Callable[[RelayError], None] | None = None,
) -> RelayResponse:
    """Run ``produce`` and turn whatever it raises into an answer; never raises.

    The only catch-all of the HTTP path: each error is logged once here, with ``ids``.
    ``rejected`` is told of every 4xx (the delivery log counts them per reason and hour).
    """
    try:
        return produce()
    except RelayError as exc:
        status = int(exc.status)
        if status == 500:
            error_id = uuid.uuid4().hex[:12]
            log_decision("misconfigured", ids, level=logging.ERROR, error_id=error_id, status=status, detail=exc.detail)
            return error_answer(exc, error_id=error_id)
        decision = "rejected" if status < 500 else "unavailable"
        log_decision(decision, ids, level=logging.WARNING, status=status, detail=exc.detail)
        if rejected is not None and status < 500:
            _report_rejection(rejected, exc)
        return error_answer(exc)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        logging.getLogger("relay").exception("relay decision=crashed error_id=%s", error_id)
        return internal_error_answer(error_id)


def _report_rejection(rejected: Callable[[RelayError], None], exc: RelayError) -> None:
    """Count a rejection; counting must never change the answer (e.g. a misconfigured relay)."""
    try:
        rejected(exc)
    except Exception as failure:
        logging.getLogger("relay").warning(
            "relay could not count a rejected request: %s", getattr(failure, "detail", type(failure).__name__)
        )

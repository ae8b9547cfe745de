"""The relay's request handling: bytes and headers in, an HTTP-shaped answer out.

Order matters: size → sender → signature (raw bytes) → parse → route → start runs. Every
failure is a ``RelayError`` turned into an answer by ``relay.responses``; nothing escapes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from devops.client import PipelineRun, PipelineStarter
from relay.decisions import log_decision
from relay.ledger import DeliveryLedger, EntryState
from relay.responses import RelayResponse, error_response, internal_error_response, json_response
from relay.secrets import RelaySecrets
from webhook.delivery import Delivery
from webhook.errors import (
    AuthenticationFailed,
    DependencyUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    PipelineRejected,
    RelayError,
    StaleEvent,
)
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest, RouteRules, route_event

MAX_BODY_BYTES = 64 * 1024


class RetryQueue(Protocol):
    """Durable hand-off of a run that could not be started within the request deadline."""

    def enqueue(self, request: PipelineRunRequest, *, attempt: int, delay: float) -> None: ...


@dataclass(frozen=True)
class RunOutcome:
    request: PipelineRunRequest
    status: str  # triggered | duplicate | in_progress | queued | rejected | unavailable
    run: PipelineRun | None = None
    error: RelayError | None = None


class RelayService:
    """Handles one delivery at a time; safe to call from several threads."""

    def __init__(
        self,
        *,
        secrets: RelaySecrets,
        rules: Callable[[], RouteRules],
        starter: PipelineStarter,
        ledger: DeliveryLedger,
        default_project: str,
        max_age: float,
        retry_queue: RetryQueue | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        max_parallel_runs: int = 8,
    ) -> None:
        self._secrets = secrets
        self._rules = rules
        self._starter = starter
        self._ledger = ledger
        self._default_project = default_project
        self._max_age = max_age
        self._retry_queue = retry_queue
        self._dry_run = dry_run
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_parallel_runs, thread_name_prefix="relay-run")
        # Caps concurrent run starts per process, whether on the pool or on request threads.
        self._slots = threading.BoundedSemaphore(max_parallel_runs)

    def handle(self, *, method: str, headers: Mapping[str, str], body: bytes) -> RelayResponse:
        """Answer one HTTP request; never raises."""
        delivery = Delivery.from_http(headers, body)
        try:
            return self._handle(method, delivery)
        except RelayError as exc:
            log_decision(
                "rejected" if exc.status < 500 else "failed",
                level=logging.WARNING, status=int(exc.status),
                delivery_id=delivery.delivery_id_hint, detail=exc.detail,
            )  # fmt: skip
            return error_response(exc)
        except Exception:
            logging.getLogger("relay").exception("relay decision=crashed delivery_id=%s", delivery.delivery_id_hint)
            return internal_error_response()

    def _handle(self, method: str, delivery: Delivery) -> RelayResponse:
        if method.upper() != "POST":
            raise MethodNotAllowed(f"method {method.upper()} not allowed; webhooks are delivered with POST")
        if len(delivery.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is {len(delivery.body)} bytes; the limit is {MAX_BODY_BYTES}")
        sender = delivery.sender
        log_decision("received", source=sender.value, delivery_id=delivery.delivery_id_hint)
        self._verify(delivery)
        event = delivery.parse(now=self._clock(), max_age=self._max_age)
        ids = _event_ids(event)
        log_decision("verified", ids)
        requests = route_event(self._rules(), event, default_project=self._default_project)
        if not requests:
            log_decision("ignored", ids)
            return json_response(200, {"status": "ignored", "detail": _ignored_detail(event), **_event_summary(event)})
        log_decision("matched", ids, detail=",".join(r.rule for r in requests))
        if self._dry_run:
            return json_response(200, {
                "status": "dry-run", "detail": "dry run: nothing was sent to Azure DevOps",
                **_event_summary(event), "runs": [_planned(r) for r in requests],
            })  # fmt: skip
        if len(requests) == 1:  # the common case: no thread hand-off on the hot path
            outcomes = [self._dispatch(requests[0])]
        else:
            outcomes = list(self._pool.map(self._dispatch, requests))
        return _aggregate(event, outcomes)

    def _verify(self, delivery: Delivery) -> None:
        now = self._clock()
        try:
            delivery.verify(secrets=self._secrets.webhook_secrets(), now=now, max_age=self._max_age)
        except StaleEvent:
            raise
        except AuthenticationFailed:
            # The secret may have just been rotated: re-read it once (rate-limited) before 401.
            if not self._secrets.refresh_webhook_secrets():
                raise
            delivery.verify(secrets=self._secrets.webhook_secrets(), now=now, max_age=self._max_age)

    def _dispatch(self, request: PipelineRunRequest) -> RunOutcome:
        """Start one run exactly once: claim, start, record (or queue on an outage)."""
        with self._slots:
            return self._dispatch_now(request)

    def _dispatch_now(self, request: PipelineRunRequest) -> RunOutcome:
        ids = request.correlation
        claim = self._ledger.claim(request.idempotency_key)
        if not claim.won:
            entry = claim.entry
            if entry.state is EntryState.STARTED:
                log_decision("duplicate", ids, run_id=entry.run.run_id if entry.run else None)
                return RunOutcome(request, "duplicate", run=entry.run)
            log_decision("in_progress", ids, detail=entry.state.value)
            return RunOutcome(request, "queued" if entry.state is EntryState.QUEUED else "in_progress")
        try:
            run = self._starter.start(request)
        except PipelineRejected as exc:
            self._ledger.record(request.idempotency_key, EntryState.FAILED, detail=exc.detail)
            log_decision("failed", ids, level=logging.ERROR, detail=exc.detail)
            return RunOutcome(request, "rejected", error=exc)
        except DependencyUnavailable as exc:
            return self._queue_or_fail(request, exc, ids)
        except BaseException:
            # No run was started (e.g. the PAT secret is missing): free the key for a retry.
            self._ledger.record(request.idempotency_key, EntryState.FAILED, detail="relay error")
            raise
        self._ledger.record(request.idempotency_key, EntryState.STARTED, run=run)
        log_decision("triggered", ids, run_id=run.run_id)
        return RunOutcome(request, "triggered", run=run)

    def _queue_or_fail(
        self, request: PipelineRunRequest, exc: DependencyUnavailable, ids: Mapping[str, object]
    ) -> RunOutcome:
        if self._retry_queue is not None:
            try:
                self._retry_queue.enqueue(request, attempt=1, delay=float(exc.retry_after))
            except DependencyUnavailable:
                pass  # the queue is down too: fall through, release the claim, answer 503
            else:
                self._ledger.record(request.idempotency_key, EntryState.QUEUED, detail=exc.detail)
                log_decision("queued", ids, level=logging.WARNING, detail=exc.detail)
                return RunOutcome(request, "queued", error=exc)
        # Nothing started and nothing queued: let the sender's retry claim it again.
        self._ledger.record(request.idempotency_key, EntryState.FAILED, detail=exc.detail)
        log_decision("unavailable", ids, level=logging.WARNING, detail=exc.detail)
        return RunOutcome(request, "unavailable", error=exc)


def _event_summary(event: RegistryEvent) -> dict[str, object]:
    """The event's ids as every answer shows them."""
    return {"delivery_id": event.delivery_id, "event": event.event, "model": event.model_name,
            "version": event.version}  # fmt: skip


def _event_ids(event: RegistryEvent) -> dict[str, object]:
    """The event's ids as log lines carry them: the answer's, plus the sender."""
    return {**_event_summary(event), "source": event.source}


def _ignored_detail(event: RegistryEvent) -> str:
    if event.is_test:
        return f"test delivery for {event.model_name!r}: no rule names this model, nothing started"
    return f"no rule matches {event.event} for model {event.model_name!r}"


def _planned(request: PipelineRunRequest) -> dict[str, object]:
    return {"rule": request.rule, "project": request.project, "pipeline_id": request.pipeline_id,
            "branch": request.branch, "parameters": request.template_parameters}  # fmt: skip


def _aggregate(event: RegistryEvent, outcomes: list[RunOutcome]) -> RelayResponse:
    """Fold per-rule outcomes into one answer: the worst outcome decides the status."""
    summary = _event_summary(event)
    runs = [o.run.as_dict() for o in outcomes if o.run is not None]
    by_status: dict[str, list[RunOutcome]] = {}
    for outcome in outcomes:
        by_status.setdefault(outcome.status, []).append(outcome)
    if "rejected" in by_status:
        detail = "; ".join(o.error.detail for o in by_status["rejected"] if o.error)
        return json_response(502, {"status": "failed", "detail": detail, **summary, "runs": runs})
    if "unavailable" in by_status:
        errors = [o.error for o in by_status["unavailable"] if isinstance(o.error, DependencyUnavailable)]
        retry_after = max(e.retry_after for e in errors)
        detail = "; ".join(e.detail for e in errors)
        return json_response(503, {"status": "unavailable", "detail": detail, **summary, "runs": runs},
                             headers={"Retry-After": str(retry_after)})  # fmt: skip
    pending = by_status.get("queued", []) + by_status.get("in_progress", [])
    if pending:
        status = "queued" if "queued" in by_status else "in_progress"
        detail = ("Azure DevOps is unavailable; the run will be retried from the queue"
                  if status == "queued" else "another delivery of this event is starting the run")  # fmt: skip
        return json_response(202, {"status": status, "detail": detail, **summary, "runs": runs,
                                   "pending": [o.request.rule for o in pending]})  # fmt: skip
    if "triggered" not in by_status:
        return json_response(200, {"status": "duplicate", "detail": "already triggered by an earlier delivery",
                                   **summary, "runs": runs})  # fmt: skip
    return json_response(200, {"status": "triggered", **summary, "runs": runs})

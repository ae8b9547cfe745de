"""The relay's request handling: bytes and headers in, an HTTP-shaped answer out.

Order matters: method, size and signature header (no configuration read) → signature over
the raw bytes → parse → route → start each rule's run exactly once. Errors are turned into
answers by ``relay.answers``, the one place that does it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from relay.answers import (
    RelayResponse,
    RunOutcome,
    answered,
    dry_run_answer,
    error_answer,
    event_summary,
    ignored_answer,
    outcomes_answer,
)
from relay.decisions import log_decision
from relay.delivery_records import failed_outcomes, rejection_reason
from relay.ports import (
    Claim,
    Deadline,
    DeliveryLedger,
    DependencyUnavailable,
    EntryState,
    LedgerEntry,
    PipelineStarter,
    RetryQueue,
    RetryTicket,
)
from relay.record_ports import DeliveryLog, StateGate
from relay.run_attempt import attempt_run, record
from relay.secrets import RelaySecrets
from webhook.delivery import Delivery
from webhook.errors import AuthenticationFailed, RelayError, StaleEvent
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest, route_event
from webhook.rules import RouteRules


def answer_request(
    *,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    verifier: Callable[[], DeliveryVerifier],
    service: Callable[[], RelayService],
    built_service: Callable[[], RelayService | None] | None = None,
) -> RelayResponse:
    """Answer one HTTP request; never raises.

    Each stage reads only the configuration it needs: the prechecks none, ``verifier`` the
    secret settings, ``service`` everything else. So an unsigned or mis-signed request is
    answered 401 even by a relay whose other settings are missing.
    """
    delivery = Delivery.from_http(headers, body)

    def produce() -> RelayResponse:
        delivery.precheck(method)
        log_decision("received", source=delivery.sender.value, delivery_id=delivery.delivery_id_hint)
        verifier().verify(delivery)
        return service().answer(delivery)

    def count_rejection(exc: RelayError) -> None:
        # Counted only by a relay that is built already: a rejected request must not make the
        # relay read its configuration (the counters are a statistic, not a guarantee).
        built = built_service() if built_service is not None else None
        if built is not None:
            built.count_rejection(exc)

    return answered(produce, ids={"delivery_id": delivery.delivery_id_hint}, rejected=count_rejection)


class DeliveryVerifier:
    """Checks a delivery's signature over its raw bytes with the current or previous secret."""

    def __init__(self, secrets: RelaySecrets, *, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self.secrets = secrets
        self._max_age = max_age
        self._clock = clock

    def verify(self, delivery: Delivery) -> None:
        """Raises ``AuthenticationFailed``/``StaleEvent``, or the secrets' errors."""
        now = self._clock()
        try:
            delivery.verify(secrets=self.secrets.webhook_secrets(), now=now, max_age=self._max_age)
        except StaleEvent:
            raise
        except AuthenticationFailed:
            # The secret may have just been rotated: re-read it once (rate-limited) before 401.
            if not self.secrets.refresh_webhook_secrets():
                raise
            delivery.verify(secrets=self.secrets.webhook_secrets(), now=now, max_age=self._max_age)


class RelayService:
    """Handles deliveries; safe to call from several threads."""

    def __init__(
        self,
        *,
        secrets: RelaySecrets,
        rules: Callable[[], RouteRules],
        starter: PipelineStarter,
        ledger: DeliveryLedger,
        default_project: str,
        max_age: float,
        deadline: float,
        retry_queue: Callable[[], RetryQueue] | None = None,
        retry_base_delay: float = 60.0,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        max_parallel_runs: int = 8,
        delivery_log: DeliveryLog | None = None,
        state_gate: StateGate | None = None,
    ) -> None:
        self.verifier = DeliveryVerifier(secrets, max_age=max_age, clock=clock)
        self._rules = rules
        self._starter = starter
        self._ledger = ledger
        self._default_project = default_project
        self._max_age = max_age
        self._deadline = deadline
        self._retry_queue = retry_queue
        self._retry_base_delay = retry_base_delay
        self._dry_run = dry_run
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_parallel_runs, thread_name_prefix="relay-run")
        # Caps concurrent run starts per process, whether on the pool or on request threads.
        self._slots = threading.BoundedSemaphore(max_parallel_runs)
        self.delivery_log = delivery_log
        self.state_gate = state_gate

    def handle(self, *, method: str, headers: Mapping[str, str], body: bytes) -> RelayResponse:
        """Answer one HTTP request; never raises."""
        return answer_request(
            method=method,
            headers=headers,
            body=body,
            verifier=lambda: self.verifier,
            service=lambda: self,
            built_service=lambda: self,
        )

    def answer(self, delivery: Delivery) -> RelayResponse:
        """Parse, route and start runs for a verified delivery.

        Raises:
            RelayError: the request is refused, or a dependency failed for every rule.
        """
        event = delivery.parse(now=self._clock(), max_age=self._max_age)
        ids = {**event_summary(event), "source": event.source}
        log_decision("verified", ids)
        requests = route_event(self._rules(), event, default_project=self._default_project)
        if not requests:
            log_decision("ignored", ids)
            return self._logged(event, [], ignored_answer(event))
        log_decision("matched", ids, detail=",".join(r.rule for r in requests))
        if self._dry_run:
            return self._logged(event, [], dry_run_answer(event, requests))
        try:
            outcomes = self.dispatch(requests, event=event)
        except RelayError as exc:
            failed = error_answer(exc)
            self._logged(event, failed_outcomes(requests, failed), failed)
            raise
        return self._logged(event, outcomes, outcomes_answer(event, outcomes))

    def dispatch(self, requests: list[PipelineRunRequest], *, event: RegistryEvent | None = None) -> list[RunOutcome]:
        """Start each request's run exactly once; several rules start concurrently.

        With ``event``, a stage or alias move passes the state gate first: a late delivery of a
        state catch-up already started is answered duplicate without a claim (relay.state_gate).
        A rule whose dependency failed (its ledger claim, say) is answered ``unavailable`` beside
        the other rules' outcomes, so the answer and the delivery log never hide a run another
        rule started or the gate decided; only when every rule failed so, and the gate decided
        none, is that error raised as it is.
        """
        decided: list[RunOutcome] = []
        if event is not None and self.state_gate is not None:
            decided, requests = self.state_gate.screen(event, requests)
        if len(requests) <= 1:  # the common case: no thread hand-off on the hot path
            results = [self._dispatch_or_failure(r) for r in requests]
        else:
            results = list(self._pool.map(self._dispatch_or_failure, requests))
        failures = [failure for _, failure in results if failure is not None]
        if failures and len(failures) == len(results) and not decided:
            raise failures[0]  # the error's own answer, logged once by answered()
        for outcome, failure in results:
            if failure is not None:
                log_decision("unavailable", outcome.request.correlation, level=logging.WARNING, detail=failure.detail)
        return decided + [outcome for outcome, _ in results]

    def rules(self) -> RouteRules:
        """Today's rules (replay and catch-up route with them, as a delivery would be)."""
        return self._rules()

    def route(self, event: RegistryEvent) -> list[PipelineRunRequest]:
        """The runs today's rules ask for ``event``."""
        return route_event(self._rules(), event, default_project=self._default_project)

    def count_rejection(self, exc: RelayError) -> None:
        """Count a rejected request in the delivery log (per reason and hour; never stored)."""
        if self.delivery_log is not None:
            self.delivery_log.rejected(rejection_reason(exc))

    def _logged(self, event: RegistryEvent, outcomes: list[RunOutcome], answer: RelayResponse) -> RelayResponse:
        """Hand the decided delivery to the delivery log (never raises, never waits), then answer."""
        if self.delivery_log is not None:
            self.delivery_log.delivered(event, outcomes, answer)
        return answer

    def _dispatch_or_failure(self, request: PipelineRunRequest) -> tuple[RunOutcome, DependencyUnavailable | None]:
        try:
            return self._dispatch(request), None
        except DependencyUnavailable as exc:
            # Nothing started for this rule. Its key is free, or, if a claim's answer was lost,
            # held until the lease ends; the sender's retry then takes it over, looking first.
            return RunOutcome(request, "unavailable", detail=exc.detail, retry_after=exc.retry_after), exc

    def _dispatch(self, request: PipelineRunRequest) -> RunOutcome:
        with self._slots:
            deadline = Deadline.after(self._deadline)
            result = self._ledger.claim(request)
            if result.claim is None:
                return self._repeat(request, result.entry)
            try:
                attempt = attempt_run(
                    result.claim, starter=self._starter, ledger=self._ledger, deadline=deadline, source="webhook"
                )
            except BaseException:
                # Nothing was started (e.g. the PAT secret is missing): free the key for a retry.
                record(self._ledger, result.claim, EntryState.RELEASED, request.correlation, detail="relay error")
                raise
            if attempt.error is not None:
                return self._queue_or_release(attempt.claim, attempt.error)
            return RunOutcome(request, attempt.status, run=attempt.run, detail=attempt.detail)

    def _repeat(self, request: PipelineRunRequest, entry: LedgerEntry) -> RunOutcome:
        """The answer to a repeat of a delivery some attempt holds or finished."""
        ids = request.correlation
        if entry.state is EntryState.STARTED:
            log_decision("duplicate", ids, run_id=entry.run.run_id if entry.run else None)
            return RunOutcome(request, "duplicate", run=entry.run)
        if entry.state is EntryState.REFUSED:
            log_decision("refused", ids, level=logging.WARNING, detail=f"refused earlier: {entry.detail}")
            return RunOutcome(request, "refused", detail=entry.detail)
        if entry.state is EntryState.QUEUED:
            log_decision("queued", ids, detail="the retry queue holds this delivery")
            return RunOutcome(request, "queued")
        if entry.state is EntryState.POISONED:
            # The queue gave up (poison message, ERROR line): a repeat must not start it after all.
            detail = f"the retry queue gave up on this run; an operator can replay it: {entry.detail}"
            log_decision("refused", ids, level=logging.WARNING, detail=detail)
            return RunOutcome(request, "refused", detail=detail)
        left = max(1, int(entry.claimed_at + self._ledger.lease - self._clock()) + 1)
        log_decision("in_progress", ids, level=logging.WARNING, detail=f"held by another attempt for up to {left} s")
        return RunOutcome(request, "in_progress", retry_after=left)

    def _queue_or_release(self, claim: Claim, exc: DependencyUnavailable) -> RunOutcome:
        """Hand the run to the retry queue; if that fails, free the key and answer 503.

        The message is sent before the ledger says ``queued`` and only becomes visible after
        the retry delay: if the ledger write fails, the message still finds the claim, waits
        for its lease, takes it over and looks for a started run before posting.
        """
        request, ids = claim.request, claim.request.correlation
        if self._retry_queue is not None:
            ticket = RetryTicket.for_request(request, attempt=1, last_error=exc.detail)
            try:
                self._retry_queue().enqueue(ticket, delay=max(self._retry_base_delay, exc.server_retry_after or 0.0))
            except DependencyUnavailable as queue_error:
                log_decision("unavailable", ids, level=logging.WARNING, detail=f"retry queue: {queue_error.detail}")
            else:
                record(self._ledger, claim, EntryState.QUEUED, ids, detail=exc.detail, attempts=0)
                log_decision("queued", ids, level=logging.WARNING, detail=exc.detail)
                return RunOutcome(request, "queued", detail=exc.detail)
        if record(self._ledger, claim, EntryState.RELEASED, ids, detail=exc.detail) is None:
            log_decision(
                "unavailable",
                ids,
                level=logging.ERROR,
                detail=f"nothing started or queued and the claim could not be released; a repeat after "
                f"{self._ledger.lease:.0f} s takes it over: {exc.detail}",
            )
        else:
            log_decision("unavailable", ids, level=logging.WARNING, detail=exc.detail)
        return RunOutcome(request, "unavailable", detail=exc.detail, retry_after=exc.retry_after)

"""The queue-triggered retry of a run Azure DevOps could not take in time.

A message is a ``RetryTicket``: it names a ledger entry, and the verified request is read
from there. The worker claims the entry like any attempt (fenced), looks for a run an earlier
attempt may have started, then starts it. DevOps still unavailable → a new ticket with a
longer delay; the last attempt, a refusal or an unreadable message → the poison queue with an
ERROR line naming the model version (a last attempt that may have started the run is followed
by a few more that look for it first, so "NOT deployed" is not said of a run that exists). A
live claim held by another attempt is waited for (the ticket comes back after the lease), never
taken for a duplicate. Correct when the host runs it twice: a repeat finds the entry started,
or claims and looks before posting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping

from relay.decisions import log_decision
from relay.ledger import PARKING
from relay.ports import (
    Claim,
    ClaimLost,
    Deadline,
    DeliveryLedger,
    EntryState,
    LedgerEntry,
    PipelineStarter,
    PoisonQueue,
    RetryQueue,
    RetryTicket,
    StorageUnavailable,
)
from relay.run_attempt import attempt_run, record
from webhook.errors import RelayError

QUEUE_MAX_DELAY_SECONDS = 3600.0
# Attempts beyond RETRY_MAX_ATTEMPTS while the last one was ambiguous (a run may exist).
AMBIGUOUS_EXTRA_ATTEMPTS = 3


def queue_backoff(
    attempt: int, retry_after: float | None, *, base: float = 60.0, jitter: Callable[[], float] = random.random
) -> float:
    """Delay before queue attempt ``attempt + 1``: base, 2x, 4x … up to an hour (±25 %), or Retry-After."""
    window = min(QUEUE_MAX_DELAY_SECONDS, base * 2.0 ** (attempt - 1))
    return max(retry_after or 0.0, window * (0.75 + 0.5 * float(jitter())))


class RetryWorker:
    """Processes one retry message; raises only when it cannot leave a durable trace."""

    def __init__(
        self,
        *,
        starter: PipelineStarter,
        ledger: DeliveryLedger,
        queue: RetryQueue,
        poison: PoisonQueue,
        max_attempts: int,
        deadline: float,
        base_delay: float = 60.0,
        max_dequeue_count: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._starter = starter
        self._ledger = ledger
        self._queue = queue
        self._poison = poison
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._base_delay = base_delay
        self._max_dequeue_count = max_dequeue_count
        self._clock = clock

    def process(self, raw_message: str, *, dequeue_count: int = 1) -> str:
        """Handle one message; returns the decision.

        Decisions: triggered, duplicate, refused, requeued, deferred, poisoned, done.

        Raises:
            DependencyUnavailable: nothing durable could be written; the host redelivers the
                message (and, after ``maxDequeueCount``, parks it: the ERROR line says so).
            RelayError: e.g. a missing PAT secret: the same; on the last delivery the ERROR line
                names the model version, so a misconfiguration never parks a run silently.
        """
        try:
            ticket = RetryTicket.from_json(raw_message)
        except ValueError as exc:
            self._poison.poison(None, reason=f"unreadable retry message: {exc}", raw=raw_message)
            log_decision("poisoned", level=logging.ERROR, detail=f"unreadable retry message: {exc}")
            return "poisoned"
        try:
            return self._process(ticket)
        except Exception as exc:
            if dequeue_count >= self._max_dequeue_count:
                reason = exc.detail if isinstance(exc, RelayError) else f"internal error ({type(exc).__name__})"
                log_decision(
                    "poisoned",
                    _ticket_ids(ticket),
                    level=logging.ERROR,
                    detail=f"{_not_deployed(ticket)}: the host moves the message to the poison queue "
                    f"after {dequeue_count} deliveries: {reason}",
                )
            raise

    def _process(self, ticket: RetryTicket) -> str:
        result = self._ledger.claim_for_retry(ticket.key)
        if result is None:
            reason = "no ledger entry holds this delivery (expired, or not written by the relay)"
            return self._give_up(ticket, None, reason)
        if result.claim is None:
            return self._not_ours(ticket, result.entry)
        claim = result.claim
        if result.entry.detail.startswith(PARKING):  # parked by an attempt that did not finish
            return self._give_up(ticket, claim, result.entry.detail.removeprefix(PARKING))
        attempt = claim.attempts + 1
        deadline = Deadline.after(self._deadline)
        outcome = attempt_run(
            claim,
            starter=self._starter,
            ledger=self._ledger,
            deadline=deadline,
            source=f"retry queue, attempt {attempt}",
        )
        if outcome.status == "refused":
            return self._give_up(ticket, outcome.claim, outcome.detail, already_recorded=True)
        if outcome.error is None:
            return outcome.status
        # An ambiguous last attempt may have started the run: parking it now would say "NOT
        # deployed" about a run that exists. A few more attempts look for it first (non-fresh).
        allowed = self._max_attempts + (AMBIGUOUS_EXTRA_ATTEMPTS if outcome.error.ambiguous else 0)
        if attempt >= allowed:
            reason = f"still unavailable after {attempt} attempts: {outcome.error.detail}"
            if outcome.error.ambiguous:
                reason += " (the last answers were lost: a run may exist; check the pipeline's runs)"
            return self._give_up(ticket, outcome.claim, reason)
        delay = queue_backoff(attempt, outcome.error.server_retry_after, base=self._base_delay)
        self._queue.enqueue(
            RetryTicket.for_request(claim.request, attempt=attempt + 1, last_error=outcome.error.detail), delay=delay
        )
        record(
            self._ledger,
            outcome.claim,
            EntryState.QUEUED,
            claim.request.correlation,
            detail=outcome.error.detail,
            attempts=attempt,
        )
        log_decision(
            "requeued",
            claim.request.correlation,
            level=logging.WARNING,
            detail=f"attempt {attempt}: {outcome.error.detail}; next in {delay:.0f} s",
        )
        return "requeued"

    def _not_ours(self, ticket: RetryTicket, entry: LedgerEntry) -> str:
        """The entry is finished, or another attempt holds it right now."""
        ids = _ticket_ids(ticket)
        if entry.state is EntryState.STARTED:
            log_decision(
                "duplicate",
                ids,
                run_id=entry.run.run_id if entry.run else None,
                detail="retry message for a started run",
            )
            return "duplicate"
        if entry.state is EntryState.REFUSED:
            log_decision("done", ids, detail=f"retry message for a refused run: {entry.detail}")
            return "done"
        if entry.state is EntryState.POISONED:
            # Parked already (the host delivered a ticket again): one poison message is enough.
            log_decision("done", ids, detail=f"retry message for a run parked in the poison queue: {entry.detail}")
            return "done"
        # Someone holds it: come back once its lease can have run out, and never call it a duplicate.
        delay = max(1.0, entry.claimed_at + self._ledger.lease - self._clock()) + 1.0
        self._queue.enqueue(ticket, delay=delay)
        log_decision("deferred", ids, detail=f"held by another attempt ({entry.state.value}); back in {delay:.0f} s")
        return "deferred"

    def _give_up(self, ticket: RetryTicket, claim: Claim | None, reason: str, *, already_recorded: bool = False) -> str:
        """Park the run for an operator: the ledger (fenced) first, then the poison message, then ERROR.

        Only the holder of the claim parks it, and the ledger says "poisoned" before the message
        is sent, so neither a ticket delivered again nor a repeat starts the run after the ERROR
        line said it was not deployed. Until the message is known to be out the entry says
        "parking"; if this attempt fails or dies meanwhile, a later ticket finishes the job
        once its lease is over (``_process``).

        Raises:
            DependencyUnavailable: the ledger or the poison queue could not be written.
        """
        ids = claim.request.correlation if claim is not None else _ticket_ids(ticket)
        if claim is not None and not already_recorded:
            try:
                claim = self._ledger.record(claim, EntryState.POISONED, detail=PARKING + reason)
            except ClaimLost:
                # Another attempt took it, or our own write landed and only its answer was lost
                # (the SDK's retry then meets our new ETag): a later delivery can tell which.
                raise StorageUnavailable(
                    f"parking delivery {claim.key!r}: the ledger moved on meanwhile", retry_after=10
                ) from None
        self._poison.poison(ticket, reason=reason)
        # The message is out: say so, trying twice (an entry left "parking" costs a second poison
        # message only if a later ticket comes for it).
        if claim is not None and not already_recorded:
            for _ in range(2):
                if record(self._ledger, claim, EntryState.POISONED, ids, detail=reason) is not None:
                    break
        log_decision("poisoned", ids, level=logging.ERROR, detail=f"{_not_deployed(ticket)}: {reason}")
        return "poisoned"


def _ticket_ids(ticket: RetryTicket) -> Mapping[str, object]:
    return {"delivery_id": ticket.delivery_id, "model": ticket.model, "version": ticket.version, "rule": ticket.rule}


def _not_deployed(ticket: RetryTicket) -> str:
    return f"model {ticket.model} version {ticket.version} was NOT deployed by rule {ticket.rule}"

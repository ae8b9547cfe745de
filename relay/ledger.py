"""The delivery ledger's rules, and the in-memory ledger for local development and tests.

One entry per (delivery id, rule), so each starts one run at most. An attempt *claims* the
entry before it starts a run; every later write of that attempt is conditional on its claim
(``Claim.etag``), so a holder that lost the entry cannot overwrite its successor. A repeat
finds the entry: started → the original run; refused → the same refusal; queued → the retry
queue owns it; poisoned → the queue gave up (an operator may reopen it); claimed and within
the lease → another attempt is in flight. A claim older than its lease or a released entry
may be taken over; a takeover is never
``fresh``, so the new holder first looks for a run its predecessor may have started.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from relay.ports import Claim, ClaimLost, ClaimResult, EntryState, LedgerEntry, PipelineRun
from webhook.routing import PipelineRunRequest

# What each path may take over (besides a claim past its lease, and an entry past retention).
# Neither takes a poisoned entry: it ended as a poison message and an ERROR line saying the
# model was NOT deployed, and a ticket the host delivers again, or a sender re-sending the
# event for another rule's sake, must not start it after all. An operator replays it (reopen).
_HTTP_MAY_TAKE = frozenset({EntryState.RELEASED})
_RETRY_MAY_TAKE = frozenset({EntryState.QUEUED, EntryState.RELEASED})
# What an operator may reopen: the entries that ended without a run.
REOPENABLE = frozenset({EntryState.REFUSED, EntryState.POISONED})
# The detail of a poisoned entry whose poison message is not known to be out yet: once its
# holder's lease is over, the retry worker may take it, only to send that message.
PARKING = "parking: "


@dataclass(frozen=True)
class LedgerTiming:
    """``lease``: how long a claim keeps others out; ``retention``: how long entries count."""

    lease: float
    retention: float = 7 * 24 * 3600.0

    def expired(self, entry: LedgerEntry, now: float) -> bool:
        """Past retention: the entry counts as absent (a new delivery, a fresh claim)."""
        return now - entry.updated_at >= self.retention

    def may_take_over(self, entry: LedgerEntry, now: float, *, by_retry: bool) -> bool:
        """Whether a new attempt may claim ``entry``; only the retry worker takes queued ones."""
        if self.expired(entry, now):
            return True
        if entry.state is EntryState.CLAIMED or (by_retry and parking(entry)):
            return now - entry.claimed_at >= self.lease
        return entry.state in (_RETRY_MAY_TAKE if by_retry else _HTTP_MAY_TAKE)


def reopened_entry(entry: LedgerEntry, *, by: str, now: float) -> LedgerEntry:
    """``entry`` released on ``by``'s word: a replay starts afresh."""
    detail = entry.detail.removeprefix(PARKING)
    return replace(entry, state=EntryState.RELEASED, updated_at=now, forced_by=by, detail=detail)


def parking(entry: LedgerEntry) -> bool:
    """Recorded "poisoned", but its poison message may not have been written."""
    return entry.state is EntryState.POISONED and entry.detail.startswith(PARKING)


def claimed_entry(request: PipelineRunRequest, now: float, previous: LedgerEntry | None, *, fresh: bool) -> LedgerEntry:
    """The entry a claim writes: a takeover keeps the first claim time, attempts and history."""
    if previous is None or fresh:
        return LedgerEntry(
            key=request.idempotency_key,
            state=EntryState.CLAIMED,
            updated_at=now,
            claimed_at=now,
            first_claimed_at=now,
            request=request,
        )
    return replace(
        previous, state=EntryState.CLAIMED, updated_at=now, claimed_at=now, request=previous.request or request
    )


def recorded_entry(
    current: LedgerEntry, state: EntryState, now: float, *, run: PipelineRun | None, detail: str, attempts: int | None
) -> LedgerEntry:
    """The entry after its holder records ``state``."""
    return replace(
        current,
        state=state,
        updated_at=now,
        run=run if run is not None else current.run,
        detail=detail[:1000],
        attempts=current.attempts if attempts is None else attempts,
    )


class InMemoryLedger:
    """A process-local ledger (no storage configured, and tests); same rules as the table."""

    def __init__(self, timing: LedgerTiming, *, clock: Callable[[], float] = time.time) -> None:
        self._timing = timing
        self._clock = clock
        self._entries: dict[str, tuple[LedgerEntry, str]] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def lease(self) -> float:
        return self._timing.lease

    def _write(self, entry: LedgerEntry) -> str:
        etag = str(next(self._etags))
        self._entries[entry.key] = (entry, etag)
        return etag

    def claim(self, request: PipelineRunRequest) -> ClaimResult:
        with self._lock:
            return self._claim(request.idempotency_key, request, by_retry=False)

    def claim_for_retry(self, key: str) -> ClaimResult | None:
        with self._lock:
            stored = self._entries.get(key)
            if stored is None or stored[0].request is None:
                return None
            return self._claim(key, stored[0].request, by_retry=True)

    def _claim(self, key: str, request: PipelineRunRequest, *, by_retry: bool) -> ClaimResult:
        now = self._clock()
        stored = self._entries.get(key)
        previous = stored[0] if stored else None
        if previous is not None and not self._timing.may_take_over(previous, now, by_retry=by_retry):
            return ClaimResult(previous)
        fresh = previous is None or self._timing.expired(previous, now)
        entry = claimed_entry(request, now, previous, fresh=fresh)
        etag = self._write(entry)
        claim = Claim(
            key=key,
            etag=etag,
            claimed_at=now,
            first_claimed_at=entry.first_claimed_at,
            request=request,
            fresh=fresh,
            attempts=entry.attempts,
        )
        return ClaimResult(entry, claim)

    def get(self, key: str) -> LedgerEntry | None:
        with self._lock:
            stored = self._entries.get(key)
            return stored[0] if stored else None

    def record(
        self,
        claim: Claim,
        state: EntryState,
        *,
        run: PipelineRun | None = None,
        detail: str = "",
        attempts: int | None = None,
    ) -> Claim:
        with self._lock:
            stored = self._entries.get(claim.key)
            if stored is None or stored[1] != claim.etag:
                raise ClaimLost(f"delivery {claim.key!r} is held by another attempt now")
            entry = recorded_entry(stored[0], state, self._clock(), run=run, detail=detail, attempts=attempts)
            return replace(claim, etag=self._write(entry), attempts=entry.attempts)

    def reopen(self, key: str, *, by: str) -> LedgerEntry | None:
        """As ``DeliveryLedger.reopen``."""
        with self._lock:
            stored = self._entries.get(key)
            if stored is None or stored[0].state not in REOPENABLE:
                return None
            entry = reopened_entry(stored[0], by=by, now=self._clock())
            self._write(entry)
            return entry

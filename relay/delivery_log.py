"""The delivery log as the runtime writes it: handed to one background writer, never in the way.

``BackgroundDeliveryLog`` implements the ``DeliveryLog`` port. A delivery's record is built
after its answer was decided and queued for a writer thread, so the answer never waits for the
log's storage; a write that fails is logged (``decision=log_unavailable``) and counted, never
raised. Rejected requests are counted in memory and added to one counter per reason and hour
every few seconds, so a flood of unauthenticated requests costs a handful of writes. Entries
past the retention are purged by the same thread, at most once an hour.

The storage behind it is a ``DeliveryLogStore``: ``relay.delivery_log_table`` in Azure Table
Storage, or ``InMemoryDeliveryLogStore`` for local development.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.answers import RelayResponse, RunOutcome
from relay.decisions import log_decision
from relay.delivery_records import (
    DeliveryRecord,
    RuleRecord,
    delivery_record,
    hour_of,
    merge_delivery,
    merge_rule,
    stub_record,
)
from webhook.events import RegistryEvent

REJECTION_FLUSH_SECONDS = 5.0
PURGE_INTERVAL_SECONDS = 3600.0
IDLE_EXIT_SECONDS = 30.0  # the writer thread ends when idle; the next write starts it again
MAX_PENDING = 1000


@dataclass(frozen=True)
class RejectionCount:
    """How many requests were rejected for ``reason`` in the UTC hour ``hour`` (YYYYMMDDHH)."""

    hour: str
    reason: str
    count: int


class DeliveryLogStore(Protocol):
    """Where the log is kept; what the operator commands read.

    Every method raises ``StorageUnavailable`` when the storage cannot be reached.
    ``write_delivery`` and ``write_rule`` merge with what is stored (``merge_delivery``).
    """

    def write_delivery(self, record: DeliveryRecord) -> None: ...

    def write_rule(
        self, delivery_id: str, rule: RuleRecord, *, model: str = "", version: str | None = None
    ) -> None: ...

    def add_rejections(self, counts: Mapping[tuple[str, str], int]) -> None: ...

    def get(self, delivery_id: str) -> DeliveryRecord | None: ...

    def recent(self, *, since: float) -> list[DeliveryRecord]:
        """Records that arrived at or after ``since``, newest first."""
        ...

    def rejections(self, *, since: float) -> list[RejectionCount]: ...

    def purge(self, *, before: float) -> int:
        """Delete records and counters last written before ``before``; returns how many."""
        ...


class InMemoryDeliveryLogStore:
    """A process-local delivery log (no storage configured, and tests); same merge rules."""

    def __init__(self) -> None:
        self._records: dict[str, DeliveryRecord] = {}
        self._rejections: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def write_delivery(self, record: DeliveryRecord) -> None:
        with self._lock:
            self._records[record.delivery_id] = merge_delivery(self._records.get(record.delivery_id), record)

    def write_rule(self, delivery_id: str, rule: RuleRecord, *, model: str = "", version: str | None = None) -> None:
        with self._lock:
            stored = self._records.get(delivery_id) or stub_record(
                delivery_id, model=model, version=version, now=rule.updated_at
            )
            current = next((r for r in stored.rules if r.rule == rule.rule), None)
            self._records[delivery_id] = stored.with_rule(merge_rule(current, rule))

    def add_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        with self._lock:
            self._rejections.update(counts)

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        with self._lock:
            return self._records.get(delivery_id)

    def recent(self, *, since: float) -> list[DeliveryRecord]:
        with self._lock:
            found = [r for r in self._records.values() if r.arrived_at >= since]
        return sorted(found, key=lambda r: r.arrived_at, reverse=True)

    def rejections(self, *, since: float) -> list[RejectionCount]:
        first = hour_of(since)
        with self._lock:
            return sorted(
                (RejectionCount(h, r, n) for (h, r), n in self._rejections.items() if h >= first),
                key=lambda c: (c.hour, c.reason),
            )

    def purge(self, *, before: float) -> int:
        cutoff = hour_of(before)
        with self._lock:
            old = [k for k, r in self._records.items() if _last_written(r) < before]
            for key in old:
                del self._records[key]
            for bucket in [b for b in self._rejections if b[0] < cutoff]:
                del self._rejections[bucket]
        return len(old)


def _last_written(record: DeliveryRecord) -> float:
    return max([record.arrived_at, *(rule.updated_at for rule in record.rules)])


class BackgroundDeliveryLog:
    """The ``DeliveryLog`` port over a store, written by one background thread."""

    def __init__(
        self,
        store: DeliveryLogStore,
        *,
        retention: float,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self._retention = retention
        self._clock = clock
        self._queue: queue.Queue[tuple[str, Callable[[], object]]] = queue.Queue(maxsize=max_pending)
        self._rejections: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._counting = False  # rejection counts taken from memory, not yet written
        self._thread: threading.Thread | None = None
        self._last_rejection_flush = 0.0
        self._last_purge = 0.0
        self.failures = 0
        self.dropped = 0

    # -- the port --------------------------------------------------------------------------
    def delivered(
        self,
        event: RegistryEvent,
        outcomes: Sequence[RunOutcome],
        answer: RelayResponse,
        *,
        origin: str = "webhook",
        forced_by: str = "",
        replay_of: str = "",
    ) -> None:
        try:
            record = delivery_record(
                event, outcomes, answer, now=self._clock(), origin=origin, forced_by=forced_by, replay_of=replay_of
            )
        except Exception as exc:  # a bug here must not fail the delivery it describes
            self._failed(event.delivery_id, "building the record", exc)
            return
        self._submit(record.delivery_id, lambda: self.store.write_delivery(record))

    def rule_changed(self, delivery_id: str, rule: RuleRecord, *, model: str = "", version: str | None = None) -> None:
        self._submit(delivery_id, lambda: self.store.write_rule(delivery_id, rule, model=model, version=version))

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._rejections[(hour_of(self._clock()), reason)] += 1
        self._ensure_writer()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything handed over so far, rejection counts included."""
        with self._lock:
            self._last_rejection_flush = 0.0  # due now
        self._ensure_writer()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending or self._rejections or self._counting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    # -- the writer ------------------------------------------------------------------------
    def _submit(self, delivery_id: str, write: Callable[[], object]) -> None:
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait((delivery_id, write))
        except queue.Full:
            with self._lock:
                self._pending -= 1
                self.dropped += 1
                dropped = self.dropped
            if dropped == 1 or dropped % 100 == 0:
                log_decision(
                    "log_unavailable",
                    {"delivery_id": delivery_id},
                    level=logging.WARNING,
                    detail=f"delivery log: {dropped} record(s) dropped, the writer is behind",
                )
            return
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="relay-delivery-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is not None:
                self._attempt("record", item[1], delivery_id=item[0])
                idle_since = time.monotonic()
                with self._idle:
                    self._pending -= 1
            self._flush_rejections()
            self._maybe_purge()
            with self._idle:
                self._idle.notify_all()
                if self._pending == 0 and not self._rejections and time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                    self._thread = None
                    return

    def _flush_rejections(self) -> None:
        with self._lock:
            due = self._clock() - self._last_rejection_flush >= REJECTION_FLUSH_SECONDS
            if not self._rejections or not due:
                return
            counts, self._rejections = self._rejections, Counter()
            self._last_rejection_flush = self._clock()
            self._counting = True
        written = self._attempt("rejection counts", lambda: self.store.add_rejections(counts))
        with self._lock:
            if not written:  # counted again next time; bounded by reasons x hours
                self._rejections.update(counts)
            self._counting = False

    def _maybe_purge(self) -> None:
        now = self._clock()
        if now - self._last_purge < PURGE_INTERVAL_SECONDS:
            return
        self._last_purge = now
        self._attempt("purge", lambda: self.store.purge(before=now - self._retention))

    def _attempt(self, what: str, write: Callable[[], object], *, delivery_id: str | None = None) -> bool:
        try:
            write()
        except Exception as exc:  # any failure of the log is reported, never raised
            self._failed(delivery_id, what, exc)
            return False
        return True

    def _failed(self, delivery_id: str | None, what: str, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            failures = self.failures
        reason = getattr(exc, "detail", None) or f"{type(exc).__name__}: {str(exc)[:200]}"
        log_decision(
            "log_unavailable",
            {"delivery_id": delivery_id},
            level=logging.WARNING,
            detail=f"delivery log: {what} not written ({failures} failure(s) so far): {reason}",
        )

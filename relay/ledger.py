"""The delivery ledger: one entry per (delivery id, rule), so each starts one run at most.

A delivery is *claimed* with a conditional insert before its run is started and *completed*
with the run id afterwards. A repeat finds the entry: completed → answer with the original
run; claimed and recent → another attempt is in flight, start nothing. A claim whose holder
died (older than the lease) or whose run was refused may be taken over. Entries older than
the retention count as absent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from devops.client import PipelineRun


class EntryState(StrEnum):
    CLAIMED = "claimed"  # a relay instance is starting the run right now
    QUEUED = "queued"  # handed to the durable retry queue
    STARTED = "started"  # the run exists: run_id is set
    FAILED = "failed"  # Azure DevOps refused it (config error); a repeat may try again


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    state: EntryState
    updated_at: float  # unix seconds
    run: PipelineRun | None = None
    detail: str = ""


@dataclass(frozen=True)
class ClaimResult:
    """``won`` is True when the caller now owns the key and must start the run."""

    won: bool
    entry: LedgerEntry


class DeliveryLedger(Protocol):
    """Keys are ``PipelineRunRequest.idempotency_key`` (``"{delivery_id}:{rule}"``)."""

    def claim(self, key: str, *, from_queue: bool = False) -> ClaimResult: ...

    def record(self, key: str, state: EntryState, *, run: PipelineRun | None = None, detail: str = "") -> None: ...


@dataclass(frozen=True)
class LedgerTiming:
    """``lease``: how long a claim blocks others; ``retention``: how long entries count."""

    lease: float = 120.0
    retention: float = 7 * 24 * 3600.0

    def may_take_over(self, entry: LedgerEntry, now: float, *, from_queue: bool = False) -> bool:
        """Whether a new attempt may claim ``entry``; only the retry worker takes QUEUED ones."""
        if now - entry.updated_at >= self.retention or entry.state is EntryState.FAILED:
            return True
        if entry.state is EntryState.QUEUED:
            return from_queue
        return entry.state is EntryState.CLAIMED and now - entry.updated_at >= self.lease


class InMemoryLedger:
    """A process-local ledger for local development and tests (no storage configured)."""

    def __init__(self, timing: LedgerTiming | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._timing = timing or LedgerTiming()
        self._clock = clock
        self._entries: dict[str, LedgerEntry] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, *, from_queue: bool = False) -> ClaimResult:
        with self._lock:
            now = self._clock()
            current = self._entries.get(key)
            if current is not None and not self._timing.may_take_over(current, now, from_queue=from_queue):
                return ClaimResult(False, current)
            entry = LedgerEntry(key=key, state=EntryState.CLAIMED, updated_at=now)
            self._entries[key] = entry
            return ClaimResult(True, entry)

    def record(self, key: str, state: EntryState, *, run: PipelineRun | None = None, detail: str = "") -> None:
        with self._lock:
            base = self._entries.get(key) or LedgerEntry(key=key, state=state, updated_at=0.0)
            self._entries[key] = replace(base, state=state, run=run, detail=detail, updated_at=self._clock())

"""The retry worker, telling the delivery log what became of each queued run.

After the worker has handled a ticket, the rule's ledger entry says how it stands (started
from the queue, queued again, poisoned, refused); that is mirrored into the delivery log's
record of the delivery. The worker's own behaviour is unchanged, and a failure to read the
entry or to log it never fails the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from relay.decisions import log_decision
from relay.delivery_records import rule_record_from_entry
from relay.ports import RetryTicket
from relay.record_ports import DeliveryLog
from relay.retry_worker import RetryWorker

# Decisions after which the entry has not moved (another attempt holds it) or cannot be read.
_NOTHING_NEW = frozenset({"deferred"})


class LoggedRetryWorker(RetryWorker):
    """A ``RetryWorker`` whose outcomes also land in the delivery log."""

    def __init__(
        self, *, delivery_log: DeliveryLog | None, clock: Callable[[], float] = time.time, **worker: Any
    ) -> None:
        super().__init__(clock=clock, **worker)
        self._delivery_log = delivery_log
        self._log_clock = clock

    def process(self, raw_message: str, *, dequeue_count: int = 1) -> str:
        """Like ``RetryWorker.process``; then the delivery log learns the rule's state."""
        decision = super().process(raw_message, dequeue_count=dequeue_count)
        if self._delivery_log is not None and decision not in _NOTHING_NEW:
            self._mirror(raw_message, decision)
        return decision

    def _mirror(self, raw_message: str, decision: str) -> None:
        try:
            ticket = RetryTicket.from_json(raw_message)
        except ValueError:
            return  # unreadable: poisoned as such, nothing to attach it to
        try:
            entry = self._ledger.get(ticket.key)
            if entry is None:
                return
            record = rule_record_from_entry(entry, now=self._log_clock(), origin="retry")
            assert self._delivery_log is not None
            self._delivery_log.rule_changed(ticket.delivery_id, record, model=ticket.model, version=ticket.version)
        except Exception as exc:  # the log is best effort: the run's fate is in the ledger already
            log_decision(
                "log_unavailable",
                {"delivery_id": ticket.delivery_id, "rule": ticket.rule},
                level=logging.WARNING,
                detail=f"delivery log: retry outcome {decision} not recorded: "
                f"{getattr(exc, 'detail', type(exc).__name__)}",
            )

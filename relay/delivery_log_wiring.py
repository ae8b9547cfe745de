"""Builds the delivery log, the state marks and the state gate from settings (no I/O here).

With host storage: the delivery log table (``DELIVERY_LOG_TABLE``) holds records, counters
and marks. Without (local development only): all three in memory, like the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.delivery_log import BackgroundDeliveryLog, DeliveryLogStore, InMemoryDeliveryLogStore
from relay.ports import DeliveryLedger
from relay.settings import Settings
from relay.state_gate import StateMarkGate
from relay.state_marks import InMemoryStateMarks, StateMarks


@dataclass(frozen=True)
class DeliveryLogParts:
    """What the service, the retry worker, catch-up and the operator commands share."""

    log: BackgroundDeliveryLog
    store: DeliveryLogStore
    marks: StateMarks
    gate: StateMarkGate


def build_delivery_log_parts(
    settings: Settings, ledger: DeliveryLedger, *, credential_factory: Callable[[], Any]
) -> DeliveryLogParts:
    store: DeliveryLogStore
    marks: StateMarks
    if settings.uses_storage:
        from relay.delivery_log_table import TableDeliveryLogStore
        from relay.state_marks_table import TableStateMarks
        from relay.storage_clients import table_service

        table = TableDeliveryLogStore(
            table_service(settings, credential_factory=credential_factory), settings.delivery_log_table
        )
        store, marks = table, TableStateMarks(table)
    else:
        store, marks = InMemoryDeliveryLogStore(), InMemoryStateMarks()
    log = BackgroundDeliveryLog(store, retention=settings.delivery_log_retention)
    return DeliveryLogParts(log=log, store=store, marks=marks, gate=StateMarkGate(marks, ledger))

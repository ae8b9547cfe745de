"""The background delivery log: never in the way of an answer, never raising, never silent."""

from __future__ import annotations

import logging
import threading
import time

from relay.answers import json_response
from relay.delivery_log import BackgroundDeliveryLog, InMemoryDeliveryLogStore
from relay.delivery_records import RuleRecord
from relay.ports import StorageUnavailable
from tests.builders import alias_event

EVENT = alias_event()
IGNORED = json_response(200, {"status": "ignored", "detail": "no rule matches"})


class BlockedStore(InMemoryDeliveryLogStore):
    """Writes wait until ``release`` is set (storage that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write_delivery(self, record):
        assert self.release.wait(timeout=20)
        super().write_delivery(record)


class DownStore(InMemoryDeliveryLogStore):
    def write_delivery(self, record):
        raise StorageUnavailable("delivery log unavailable (ServiceRequestError)")

    def add_rejections(self, counts):
        raise StorageUnavailable("delivery log unavailable (ServiceRequestError)")


def test_the_caller_does_not_wait_for_a_hanging_store():
    store = BlockedStore()
    log = BackgroundDeliveryLog(store, retention=86400.0)
    log.delivered(EVENT, [], IGNORED)  # returns although the store is blocked
    assert store.get("d-1") is None and not log.flush(timeout=0.2)
    store.release.set()
    assert log.flush(timeout=20)
    record = store.get("d-1")
    assert record is not None and record.answer == "ignored"


def test_a_store_outage_is_logged_and_counted_not_raised(caplog):
    log = BackgroundDeliveryLog(DownStore(), retention=86400.0)
    with caplog.at_level(logging.WARNING, logger="relay"):
        log.delivered(EVENT, [], IGNORED)
        log.delivered(EVENT.model_copy(update={"delivery_id": "d-2"}), [], IGNORED)
        assert log.flush(timeout=20)
    assert log.failures == 2
    lines = [r.getMessage() for r in caplog.records if "decision=log_unavailable" in r.getMessage()]
    assert len(lines) == 2 and "2 failure(s) so far" in lines[-1] and "delivery_id=d-2" in lines[-1]


def test_rejections_are_kept_in_memory_until_the_store_takes_them():
    store = DownStore()
    log = BackgroundDeliveryLog(store, retention=86400.0, clock=lambda: 1_800_000_000.0)
    for _ in range(3):
        log.rejected("signature")
    assert not log.flush(timeout=0.5)  # the store refuses: nothing is dropped
    healthy = InMemoryDeliveryLogStore()
    log.store = healthy
    assert log.flush(timeout=20)
    assert [(c.reason, c.count) for c in healthy.rejections(since=0)] == [("signature", 3)]


def test_a_full_queue_drops_with_a_warning_instead_of_blocking(caplog):
    store = BlockedStore()
    log = BackgroundDeliveryLog(store, retention=86400.0, max_pending=1)
    with caplog.at_level(logging.WARNING, logger="relay"):
        for i in range(4):
            log.delivered(EVENT.model_copy(update={"delivery_id": f"d-{i}"}), [], IGNORED)
    assert log.dropped >= 2
    assert any("dropped, the writer is behind" in r.getMessage() for r in caplog.records)
    store.release.set()
    assert log.flush(timeout=20)


def test_a_rule_report_of_an_unlogged_delivery_keeps_model_and_version():
    store = InMemoryDeliveryLogStore()
    log = BackgroundDeliveryLog(store, retention=86400.0)
    log.rule_changed("d-9", RuleRecord("deploy", "poisoned", updated_at=time.time()), model="fraud", version="7")
    assert log.flush(timeout=20)
    record = store.get("d-9")
    assert record is not None and (record.model, record.version, record.status) == ("fraud", "7", "poisoned")


def test_old_records_are_purged_by_the_writer():
    store = InMemoryDeliveryLogStore()
    now = [1_800_000_000.0]
    log = BackgroundDeliveryLog(store, retention=3600.0, clock=lambda: now[0])
    log.delivered(EVENT, [], IGNORED)
    assert log.flush(timeout=20)
    now[0] += 7200 + 3600  # past the retention and past the purge interval
    log.delivered(EVENT.model_copy(update={"delivery_id": "d-2"}), [], IGNORED)
    assert log.flush(timeout=20)
    assert store.get("d-1") is None and store.get("d-2") is not None

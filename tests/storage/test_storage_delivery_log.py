"""The delivery log and the state marks in Azurite's Table service, through the real client."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.data.tables import TableServiceClient

from relay.delivery_log import BackgroundDeliveryLog
from relay.delivery_log_table import TableDeliveryLogStore, partition_of
from relay.delivery_records import DeliveryRecord, RuleRecord
from relay.state_marks import MarkConflict, StateMark
from relay.state_marks_table import TableStateMarks
from standins.azurite import Azurite

pytestmark = pytest.mark.azurite

NOW = 1_800_000_000.0


@pytest.fixture
def store(azurite: Azurite) -> TableDeliveryLogStore:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    return TableDeliveryLogStore(service, "log" + uuid.uuid4().hex[:16], clock=lambda: NOW)


def record(
    delivery_id: str = "d-1",
    *,
    at: float = NOW,
    rules: tuple[RuleRecord, ...] = (),
    answer: str = "triggered",
    model: str = "fraud",
    **fields: object,
) -> DeliveryRecord:
    return DeliveryRecord(
        delivery_id=delivery_id,
        arrived_at=at,
        source="mlflow",
        event="model_version_alias.created",
        model=model,
        version="7",
        answer=answer,
        http_status=200,
        alias="champion",
        rules=rules,
        first_arrived_at=at,
        event_json='{"x": 1}',
        **fields,
    )  # type: ignore[arg-type]


def rule(
    name: str = "deploy",
    status: str = "triggered",
    *,
    at: float = NOW,
    run_id: int | None = 41,
    origin: str = "webhook",
) -> RuleRecord:
    return RuleRecord(
        rule=name, status=status, pipeline_id=13, run_id=run_id, url=f"https://r/{run_id}", origin=origin, updated_at=at
    )


class TestRecords:
    """One partition per delivery: the record row and a row per rule, merged on every write."""

    def test_a_record_reads_back_with_its_rules(self, store: TableDeliveryLogStore) -> None:
        written = record(rules=(rule("audit", run_id=42), rule()))
        store.write_delivery(written)
        assert store.get("d-1") == written

    def test_a_sender_retry_counts_an_arrival_and_keeps_the_triggered_run(self, store: TableDeliveryLogStore) -> None:
        store.write_delivery(record(rules=(rule(),)))
        store.write_delivery(record(at=NOW + 5, answer="duplicate", rules=(rule(status="duplicate", at=NOW + 5),)))
        stored = store.get("d-1")
        assert stored is not None
        assert (stored.arrivals, stored.answer, stored.status) == (2, "duplicate", "triggered")
        assert stored.rules[0].run_id == 41 and stored.first_arrived_at == NOW

    def test_the_worker_moves_a_queued_rule_on(self, store: TableDeliveryLogStore) -> None:
        store.write_delivery(record(answer="queued", rules=(rule(status="queued", run_id=None),)))
        store.write_rule("d-1", rule(at=NOW + 60, run_id=77, origin="retry"))
        stored = store.get("d-1")
        assert stored is not None and stored.status == "triggered" and stored.answer == "queued"
        assert (stored.rules[0].run_id, stored.rules[0].origin) == (77, "retry")

    def test_a_rule_report_without_its_delivery_record_leaves_a_stub(self, store: TableDeliveryLogStore) -> None:
        store.write_rule("lost-1", rule(status="poisoned", run_id=None), model="fraud", version="7")
        stored = store.get("lost-1")
        assert stored is not None and (stored.model, stored.version, stored.status) == ("fraud", "7", "poisoned")
        assert "not written" in stored.detail

    def test_ids_table_keys_forbid_are_hashed_into_the_partition(self, store: TableDeliveryLogStore) -> None:
        odd = "weird/#?id\\1"
        store.write_delivery(record(odd))
        assert partition_of(odd).startswith("d-h-")
        stored = store.get(odd)
        assert stored is not None and stored.delivery_id == odd

    def test_recent_lists_newest_first_since_a_time(self, store: TableDeliveryLogStore) -> None:
        for i, at in enumerate((NOW - 7200, NOW - 60, NOW)):
            store.write_delivery(record(f"d-{i}", at=at, rules=(rule(run_id=i + 1),)))
        found = store.recent(since=NOW - 3600)
        assert [r.delivery_id for r in found] == ["d-2", "d-1"]
        assert [r.rules[0].run_id for r in found] == [3, 2]

    def test_concurrent_reports_of_two_rules_both_land(self, store: TableDeliveryLogStore) -> None:
        store.write_delivery(
            record(answer="queued", rules=(rule("a", "queued", run_id=None), rule("b", "queued", run_id=None)))
        )
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda name: store.write_rule("d-1", rule(name, at=NOW + 1, run_id=ord(name))), "ab"))
        stored = store.get("d-1")
        assert stored is not None and [(r.rule, r.status) for r in stored.rules] == [
            ("a", "triggered"),
            ("b", "triggered"),
        ]

    def test_purge_deletes_old_records_and_counters_but_never_marks(self, store: TableDeliveryLogStore) -> None:
        store.write_delivery(record("old", at=NOW - 10 * 86400, rules=(rule(at=NOW - 10 * 86400),)))
        store.write_delivery(record("new", at=NOW))
        marks = TableStateMarks(store)
        marks.put(marks.get("fraud", "alias:champion").with_marks({"deploy": StateMark("7", 1.0, "d-0", "webhook")}))
        assert store.purge(before=NOW - 7 * 86400) == 2
        assert store.get("old") is None and store.get("new") is not None
        assert marks.get("fraud", "alias:champion").marks["deploy"].version == "7"


class TestRejectionCounters:
    """One row per reason and hour, incremented under its ETag: concurrent adds are all counted."""

    def test_concurrent_increments_are_never_lost(self, store: TableDeliveryLogStore) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: store.add_rejections({("2027011512", "signature"): 1}), range(40)))
        store.add_rejections({("2027011512", "stale"): 3, ("2027011513", "signature"): 2})
        counts = {(c.hour, c.reason): c.count for c in store.rejections(since=0)}
        assert counts == {("2027011512", "signature"): 40, ("2027011512", "stale"): 3, ("2027011513", "signature"): 2}

    def test_a_flood_becomes_a_few_writes(self, store: TableDeliveryLogStore) -> None:
        writes = []
        original = store.add_rejections
        log = BackgroundDeliveryLog(store, retention=86400.0, clock=lambda: NOW)
        store.add_rejections = lambda counts: (writes.append(dict(counts)), original(counts))  # type: ignore[method-assign]
        for _ in range(500):
            log.rejected("signature")
        assert log.flush(timeout=20)
        assert sum(c.count for c in store.rejections(since=NOW - 3600)) == 500
        assert len(writes) <= 3, writes


class TestStateMarks:
    """Marks are written only by whoever read them last (ETag), and survive any purge."""

    def test_the_second_of_two_writers_from_the_same_read_conflicts(self, store: TableDeliveryLogStore) -> None:
        marks = TableStateMarks(store)
        read = marks.get("fraud", "alias:champion")
        marks.put(read.with_marks({"deploy": StateMark("7", NOW, "d-1", "webhook", NOW)}))
        with pytest.raises(MarkConflict):
            marks.put(read.with_marks({"deploy": StateMark("8", NOW, "catch-up-x", "catch-up", NOW)}))
        assert marks.get("fraud", "alias:champion").marks["deploy"].delivery_id == "d-1"

    def test_racing_writers_of_a_new_entity_have_one_winner(self, store: TableDeliveryLogStore) -> None:
        marks = TableStateMarks(store)
        store.client()  # the table exists first: this is about the insert
        barrier = threading.Barrier(4)

        def write(i: int) -> bool:
            read = marks.get("fraud", "stage:production")
            barrier.wait(timeout=10)
            try:
                marks.put(read.with_marks({"prod": StateMark(str(i), NOW, f"d-{i}", "webhook", NOW)}))
            except MarkConflict:
                return False
            return True

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert sorted(pool.map(write, range(4))) == [False, False, False, True]

"""TableLedger against Azurite's Table service, through the real azure-data-tables client."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from relay.ledger import EntryState, LedgerTiming
from relay.ports import PipelineRun, StorageUnavailable
from relay.settings import settings_from_env
from relay.storage import TableLedger, azurite_connection_string, storage_clients
from standins.azurite import Azurite

pytestmark = pytest.mark.azurite

TIMING = LedgerTiming(lease=60.0, retention=7 * 86400.0)
RUN = PipelineRun(rule="deploy", pipeline_id=13, run_id=4242, url="https://dev.azure.com/contoso/MLOps/_build/results?buildId=4242")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(azurite: Azurite) -> TableServiceClient:
    return TableServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def table_name() -> str:
    return "ledger" + uuid.uuid4().hex[:16]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(service: TableServiceClient, table_name: str, clock: Clock) -> TableLedger:
    return TableLedger(service, table_name, TIMING, clock=clock)


class TestClaimAndRecord:
    """Conditional insert before the run; the run id recorded after; repeats see it."""

    def test_first_claim_wins_and_creates_the_table(self, ledger: TableLedger, service: TableServiceClient,
                                                    table_name: str) -> None:  # fmt: skip
        claim = ledger.claim("d-1:deploy")
        assert claim.won and claim.entry.state is EntryState.CLAIMED
        assert service.get_table_client(table_name).get_entity("d-1", "deploy")["state"] == "claimed"

    def test_repeat_while_in_flight_does_not_win(self, ledger: TableLedger, clock: Clock) -> None:
        assert ledger.claim("d-1:deploy").won
        clock.now += TIMING.lease - 1
        repeat = ledger.claim("d-1:deploy")
        assert not repeat.won and repeat.entry.state is EntryState.CLAIMED

    def test_repeat_after_start_returns_the_original_run(self, ledger: TableLedger) -> None:
        ledger.claim("d-1:deploy")
        ledger.record("d-1:deploy", EntryState.STARTED, run=RUN)
        repeat = ledger.claim("d-1:deploy")
        assert not repeat.won
        assert repeat.entry.state is EntryState.STARTED and repeat.entry.run == RUN

    def test_rules_of_one_delivery_are_separate_keys(self, ledger: TableLedger) -> None:
        assert ledger.claim("d-1:deploy").won
        assert ledger.claim("d-1:audit").won

    def test_queued_entry_is_taken_only_by_the_retry_worker(self, ledger: TableLedger) -> None:
        ledger.claim("d-1:deploy")
        ledger.record("d-1:deploy", EntryState.QUEUED, detail="HTTP 503")
        assert not ledger.claim("d-1:deploy").won
        assert ledger.claim("d-1:deploy", from_queue=True).won


class TestTakeover:
    """A dead holder's claim (lease over) or a refused run may be claimed again, by one only."""

    def test_expired_lease_is_taken_over(self, ledger: TableLedger, clock: Clock) -> None:
        ledger.claim("d-1:deploy")
        clock.now += TIMING.lease
        assert ledger.claim("d-1:deploy").won

    def test_failed_entry_is_taken_over_at_once(self, ledger: TableLedger) -> None:
        ledger.claim("d-1:deploy")
        ledger.record("d-1:deploy", EntryState.FAILED, detail="HTTP 400 Unexpected parameter")
        claim = ledger.claim("d-1:deploy")
        assert claim.won and claim.entry.state is EntryState.CLAIMED

    def test_etag_race_has_exactly_one_winner(self, service: TableServiceClient, table_name: str,
                                              clock: Clock) -> None:  # fmt: skip
        """Both claimers read the stale entry (same ETag) before either writes."""
        TableLedger(service, table_name, TIMING, clock=clock).claim("d-1:deploy")
        clock.now += TIMING.lease + 1
        both_read = threading.Barrier(2, timeout=20)
        claimers = [TableLedger(_ReadBarrierService(service, both_read), table_name, TIMING, clock=clock)
                    for _ in range(2)]  # fmt: skip
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda ledger: ledger.claim("d-1:deploy"), claimers))
        assert sorted(r.won for r in results) == [False, True]
        loser = next(r for r in results if not r.won)
        assert loser.entry.state is EntryState.CLAIMED and loser.entry.updated_at == clock.now

    def test_many_concurrent_claimers_of_a_new_key_have_one_winner(self, service: TableServiceClient,
                                                                    table_name: str) -> None:  # fmt: skip
        ledgers = [TableLedger(service, table_name, TIMING) for _ in range(10)]
        ledgers[0].claim("warm-up:deploy")  # create the table first: this test is about the insert
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda ledger: ledger.claim("d-2:deploy"), ledgers))
        assert sum(r.won for r in results) == 1


class TestRetention:
    def test_entry_older_than_retention_counts_as_absent(self, ledger: TableLedger, clock: Clock) -> None:
        ledger.claim("d-1:deploy")
        ledger.record("d-1:deploy", EntryState.STARTED, run=RUN)
        clock.now += TIMING.retention - 1
        assert not ledger.claim("d-1:deploy").won
        clock.now += 1
        assert ledger.claim("d-1:deploy").won


class TestUnsafeDeliveryIds:
    """Table keys forbid / \\ # ? and control characters; the sender chooses delivery ids."""

    @pytest.mark.parametrize("delivery_id", ["a/b", "back\\slash", "hash#tag", "what?", "tab\there", "x" * 300,
                                             "ünïcödé", "line\nbreak", ""])  # fmt: skip
    def test_unsafe_id_is_stored_and_found_again(self, ledger: TableLedger, delivery_id: str) -> None:
        key = f"{delivery_id}:deploy"
        claim = ledger.claim(key)
        assert claim.won and claim.entry.key == key
        ledger.record(key, EntryState.STARTED, run=RUN)
        repeat = ledger.claim(key)
        assert not repeat.won and repeat.entry.run == RUN

    def test_different_unsafe_ids_do_not_collide(self, ledger: TableLedger) -> None:
        assert ledger.claim("a/b:deploy").won
        assert ledger.claim("a\\b:deploy").won
        assert ledger.claim("a#b:deploy").won

    def test_delivery_id_with_colons_keeps_the_rule(self, ledger: TableLedger, service: TableServiceClient,
                                                    table_name: str) -> None:  # fmt: skip
        assert ledger.claim("urn:mlflow:d-1:deploy").won
        assert service.get_table_client(table_name).get_entity("urn:mlflow:d-1", "deploy")


class TestUnavailable:
    def test_unreachable_table_service_raises_storage_unavailable(self, unused_port: int) -> None:
        conn = azurite_connection_string(blob_port=unused_port, queue_port=unused_port, table_port=unused_port)
        settings = settings_from_env({"DEVOPS_ORG_URL": "https://dev.azure.com/c", "DEVOPS_PROJECT": "p",
                                      "AzureWebJobsStorage": conn})  # fmt: skip
        tables, _ = storage_clients(settings, credential_factory=lambda: None)
        with pytest.raises(StorageUnavailable, match="delivery ledger unavailable"):
            TableLedger(tables, "ledger", TIMING).claim("d-1:deploy")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ReadBarrierService:
    """Hands out table clients whose first ``get_entity`` waits until every claimer has read."""

    def __init__(self, service: TableServiceClient, barrier: threading.Barrier) -> None:
        self._service = service
        self._barrier = barrier

    def create_table_if_not_exists(self, name: str) -> Any:
        return _ReadBarrierTable(self._service.create_table_if_not_exists(name), self._barrier)


class _ReadBarrierTable:
    def __init__(self, table: Any, barrier: threading.Barrier) -> None:
        self._table = table
        self._barrier = barrier
        self._waited = False

    def get_entity(self, *args: Any, **kwargs: Any) -> Any:
        entity = self._table.get_entity(*args, **kwargs)
        if not self._waited:
            self._waited = True
            self._barrier.wait()
        return entity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

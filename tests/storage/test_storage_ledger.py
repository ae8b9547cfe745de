"""TableLedger against Azurite's Table service, through the real azure-data-tables client."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from relay.budgets import use_fixed_durations
from relay.ledger import LedgerTiming
from relay.ports import ClaimLost, EntryState, PipelineRun, StorageUnavailable
from relay.settings import settings_from_env
from relay.storage_clients import azurite_connection_string, table_service
from relay.table_ledger import TableLedger
from standins.azurite import Azurite
from standins.storage_faults import StorageFaultProxy, WriteFault, table_write
from standins.timescale import TimeScale
from tests.builders import run_request
from webhook.routing import PipelineRunRequest

pytestmark = pytest.mark.azurite

TIMING = LedgerTiming(lease=60.0, retention=7 * 86400.0)
RUN = PipelineRun(
    rule="deploy", pipeline_id=13, run_id=4242, url="https://dev.azure.com/contoso/MLOps/_build/results?buildId=4242"
)


def request(delivery_id: str = "d-1", rule: str = "deploy") -> PipelineRunRequest:
    parameters = {"model_name": "fraud", "delivery_id": delivery_id}
    return run_request(delivery_id, rule, branch="refs/heads/main", parameters=parameters)


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
    """Conditional insert before the run, holding the verified request; the outcome recorded after."""

    def test_first_claim_wins_and_stores_the_verified_request(
        self, ledger: TableLedger, service: TableServiceClient, table_name: str
    ) -> None:
        result = ledger.claim(request())
        assert result.claim is not None and result.claim.fresh and result.entry.state is EntryState.CLAIMED
        entity = service.get_table_client(table_name).get_entity("d-1", "deploy")
        assert entity["state"] == "claimed" and PipelineRunRequest.model_validate_json(entity["request"]) == request()
        stored = ledger.get("d-1:deploy")
        assert stored is not None and stored.request == request()
        assert stored.claimed_at == stored.first_claimed_at == result.claim.claimed_at

    def test_repeat_while_in_flight_does_not_win(self, ledger: TableLedger, clock: Clock) -> None:
        assert ledger.claim(request()).won
        clock.now += TIMING.lease - 1
        repeat = ledger.claim(request())
        assert not repeat.won and repeat.entry.state is EntryState.CLAIMED

    def test_repeat_after_start_returns_the_original_run(self, ledger: TableLedger) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, EntryState.STARTED, run=RUN)
        repeat = ledger.claim(request())
        assert not repeat.won and repeat.entry.state is EntryState.STARTED and repeat.entry.run == RUN

    def test_rules_of_one_delivery_are_separate_keys(self, ledger: TableLedger) -> None:
        assert ledger.claim(request(rule="deploy")).won and ledger.claim(request(rule="audit")).won

    def test_queued_entry_is_taken_only_by_the_retry_worker_with_its_request(self, ledger: TableLedger) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, EntryState.QUEUED, detail="HTTP 503", attempts=0)
        assert not ledger.claim(request()).won
        taken = ledger.claim_for_retry("d-1:deploy")
        assert taken is not None and taken.claim is not None and not taken.claim.fresh
        assert taken.claim.request == request()

    def test_retry_claim_of_an_unknown_key_finds_nothing(self, ledger: TableLedger) -> None:
        ledger.claim(request("other"))  # the table exists
        assert ledger.claim_for_retry("forged:deploy") is None


class TestFencing:
    """Every write after the claim is If-Match on the claim's ETag: a stale holder stops."""

    def test_stale_holder_gets_claim_lost_and_cannot_overwrite(self, ledger: TableLedger, clock: Clock) -> None:
        stale = ledger.claim(request()).claim
        clock.now += TIMING.lease
        successor = ledger.claim(request()).claim
        assert stale is not None and successor is not None
        ledger.record(successor, EntryState.STARTED, run=RUN)
        with pytest.raises(ClaimLost):
            ledger.record(stale, EntryState.RELEASED, detail="HTTP 503")
        entry = ledger.get("d-1:deploy")
        assert entry is not None and entry.state is EntryState.STARTED and entry.run == RUN

    def test_each_record_moves_the_etag_on(self, ledger: TableLedger) -> None:
        first = ledger.claim(request()).claim
        assert first is not None
        second = ledger.record(first, EntryState.QUEUED, attempts=0)
        assert second.etag != first.etag
        with pytest.raises(ClaimLost):
            ledger.record(first, EntryState.STARTED, run=RUN)  # the holder's own old ETag is stale too
        assert ledger.record(second, EntryState.STARTED, run=RUN).etag != second.etag

    def test_takeover_keeps_the_first_claim_time_and_looks_before_posting(
        self, ledger: TableLedger, clock: Clock
    ) -> None:
        first = ledger.claim(request()).claim
        assert first is not None
        clock.now += TIMING.lease + 5
        taken = ledger.claim(request()).claim
        assert taken is not None and not taken.fresh
        assert taken.first_claimed_at == first.claimed_at and taken.claimed_at == clock.now

    def test_released_entry_is_taken_over_at_once(self, ledger: TableLedger) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, EntryState.RELEASED, detail="retry queue unavailable")
        taken = ledger.claim(request())
        assert taken.claim is not None and not taken.claim.fresh

    @pytest.mark.parametrize("state", [EntryState.REFUSED, EntryState.POISONED])
    def test_refused_or_poisoned_entry_waits_for_an_operator(self, ledger: TableLedger, state: EntryState) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, state, detail="given up")
        assert not ledger.claim(request()).won
        retry = ledger.claim_for_retry("d-1:deploy")
        assert retry is not None and not retry.won
        reopened = ledger.reopen("d-1:deploy", by="alice")
        assert reopened.state is EntryState.RELEASED and reopened.forced_by == "alice"
        assert ledger.claim(request()).won

    def test_etag_race_has_exactly_one_winner(self, service: TableServiceClient, table_name: str, clock: Clock) -> None:
        """Both claimers read the stale entry (same ETag) before either writes."""
        TableLedger(service, table_name, TIMING, clock=clock).claim(request())
        clock.now += TIMING.lease + 1
        both_read = threading.Barrier(2, timeout=20)
        claimers = [
            TableLedger(_ReadBarrierService(service, both_read), table_name, TIMING, clock=clock) for _ in range(2)
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda ledger: ledger.claim(request()), claimers))
        assert sorted(r.won for r in results) == [False, True]
        loser = next(r for r in results if not r.won)
        assert loser.entry.state is EntryState.CLAIMED and loser.entry.claimed_at == clock.now

    def test_two_operators_reopening_at_once_have_one_winner(
        self, service: TableServiceClient, table_name: str, clock: Clock
    ) -> None:
        first = TableLedger(service, table_name, TIMING, clock=clock)
        claim = first.claim(request()).claim
        assert claim is not None
        first.record(claim, EntryState.REFUSED, detail="HTTP 400")
        both_read = threading.Barrier(2, timeout=20)
        operators = [
            TableLedger(_ReadBarrierService(service, both_read), table_name, TIMING, clock=clock) for _ in range(2)
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda ledger: ledger.reopen("d-1:deploy", by="alice"), operators))
        assert sorted(r is None for r in results) == [False, True]

    def test_a_started_entry_is_not_reopened(self, ledger: TableLedger) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, EntryState.STARTED, run=RUN)
        assert ledger.reopen("d-1:deploy", by="alice") is None
        entry = ledger.get("d-1:deploy")
        assert entry is not None and entry.state is EntryState.STARTED and entry.forced_by == ""

    def test_many_concurrent_claimers_of_a_new_key_have_one_winner(
        self, service: TableServiceClient, table_name: str
    ) -> None:
        ledgers = [TableLedger(service, table_name, TIMING) for _ in range(10)]
        ledgers[0].claim(request("warm-up"))  # create the table first: this test is about the insert
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda ledger: ledger.claim(request("d-2")), ledgers))
        assert sum(r.won for r in results) == 1


class TestRetention:
    def test_entry_older_than_retention_counts_as_absent(self, ledger: TableLedger, clock: Clock) -> None:
        claim = ledger.claim(request()).claim
        assert claim is not None
        ledger.record(claim, EntryState.STARTED, run=RUN)
        clock.now += TIMING.retention - 1
        assert not ledger.claim(request()).won
        clock.now += 1
        fresh = ledger.claim(request()).claim
        assert fresh is not None and fresh.fresh and fresh.first_claimed_at == clock.now


class TestUnsafeDeliveryIds:
    """Table keys forbid / \\ # ? and control characters; the sender chooses delivery ids."""

    @pytest.mark.parametrize(
        "delivery_id", ["a/b", "back\\slash", "hash#tag", "what?", "tab\there", "x" * 300, "ünïcödé", "line\nbreak", ""]
    )
    def test_unsafe_id_is_stored_and_found_again(self, ledger: TableLedger, delivery_id: str) -> None:
        result = ledger.claim(request(delivery_id))
        assert result.claim is not None and result.entry.key == f"{delivery_id}:deploy"
        ledger.record(result.claim, EntryState.STARTED, run=RUN)
        repeat = ledger.claim(request(delivery_id))
        assert not repeat.won and repeat.entry.run == RUN and repeat.entry.request == request(delivery_id)

    def test_different_unsafe_ids_do_not_collide(self, ledger: TableLedger) -> None:
        assert all(ledger.claim(request(d)).won for d in ("a/b", "a\\b", "a#b"))

    def test_delivery_id_with_colons_keeps_the_rule(
        self, ledger: TableLedger, service: TableServiceClient, table_name: str
    ) -> None:
        assert ledger.claim(request("urn:mlflow:d-1")).won
        assert service.get_table_client(table_name).get_entity("urn:mlflow:d-1", "deploy")


class TestUnavailable:
    def test_unreachable_table_service_raises_storage_unavailable(self) -> None:
        port = _unused_port()
        conn = azurite_connection_string(blob_port=port, queue_port=port, table_port=port)
        with pytest.raises(StorageUnavailable, match="delivery ledger unavailable"):
            TableLedger(_tables(conn), "ledger", TIMING).claim(request())

    def test_a_failing_write_gives_up_within_the_storage_call_budget(
        self, proxy: StorageFaultProxy, table_name: str
    ) -> None:
        durations = TimeScale().fixed_durations()
        previous = use_fixed_durations(durations)
        try:
            ledger = TableLedger(_tables(proxy.connection_string), table_name, TIMING)
            claim = ledger.claim(request()).claim
            assert claim is not None
            proxy.add(WriteFault("'started' fails", table_write("started"), count=1))
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                ledger.record(claim, EntryState.STARTED, run=RUN)
            assert time.monotonic() - started <= durations.storage_call
        finally:
            use_fixed_durations(previous)
        assert proxy.injected["'started' fails"] == 1

    def test_an_insert_whose_answer_was_lost_is_held_for_the_lease_then_taken_over(
        self, proxy: StorageFaultProxy, table_name: str, clock: Clock
    ) -> None:
        """The SDK does not retry a POST whose answer was lost: the caller is told storage failed
        (503), and its repeat finds the orphaned claim held until the lease ends."""
        ledger = TableLedger(_tables(proxy.connection_string), table_name, TIMING, clock=clock)
        ledger.claim(request("warm-up"))
        proxy.add(
            WriteFault(
                "insert applied, answer lost", table_write("claimed", method="POST"), action="applied_then_reset"
            )
        )
        with pytest.raises(StorageUnavailable):
            ledger.claim(request())
        clock.now += 1  # the sender's repeat, a second later
        repeat = ledger.claim(request())
        assert not repeat.won and repeat.entry.state is EntryState.CLAIMED
        clock.now += TIMING.lease
        taken = ledger.claim(request()).claim
        assert taken is not None and not taken.fresh


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[StorageFaultProxy]:
    started = StorageFaultProxy(azurite).start()
    yield started
    started.stop()


def _tables(connection_string: str) -> TableServiceClient:
    settings = settings_from_env(
        {"DEVOPS_ORG_URL": "https://dev.azure.com/c", "DEVOPS_PROJECT": "p", "AzureWebJobsStorage": connection_string}
    )
    return table_service(settings, credential_factory=lambda: None)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ReadBarrierService:
    """Hands out table clients whose first ``get_entity`` waits until every claimer has read."""

    def __init__(self, service: TableServiceClient, barrier: threading.Barrier) -> None:
        self._service = service
        self._barrier = barrier

    def get_table_client(self, name: str) -> Any:
        return _ReadBarrierTable(self._service.get_table_client(name), self._barrier)

    def create_table(self, name: str) -> Any:
        return self._service.create_table(name)


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

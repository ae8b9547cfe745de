"""``TableLedger`` and its table against Azurite: no per-process table check, the table created by
the first insert that finds none."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from relay.ledger import LedgerTiming
from relay.table_ledger import TableLedger
from standins.azurite import Azurite
from tests.builders import run_request
from webhook.routing import PipelineRunRequest

pytestmark = pytest.mark.azurite

TIMING = LedgerTiming(lease=60.0, retention=7 * 86400.0)


def request(delivery_id: str = "d-1") -> PipelineRunRequest:
    return run_request(delivery_id, "production", model="m", version="1", parameters={"delivery_id": delivery_id})


class RecordingService:
    """The table service client, recording each request's method and path."""

    def __init__(self, azurite: Azurite) -> None:
        self.requests: list[tuple[str, str]] = []

        def record(pipeline_request: Any) -> None:
            http = pipeline_request.http_request
            self.requests.append((http.method, http.url.split("?")[0].rsplit("/", 1)[-1]))

        self.client = TableServiceClient.from_connection_string(azurite.connection_string, raw_request_hook=record)

    def table_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[1] == "Tables"]


@pytest.fixture
def table_name() -> str:
    return "ledger" + uuid.uuid4().hex[:16]


class TestTable:
    def test_claim_with_the_table_present_sends_only_the_insert(self, azurite: Azurite, table_name: str) -> None:
        service = RecordingService(azurite)
        service.client.create_table(table_name)
        service.requests.clear()
        result = TableLedger(service.client, table_name, TIMING).claim(request())
        assert result.won and result.claim is not None and result.claim.fresh
        assert service.requests == [("POST", table_name)]  # no table check before it

    def test_first_insert_without_the_table_creates_it_and_claims(self, azurite: Azurite, table_name: str) -> None:
        service = RecordingService(azurite)
        ledger = TableLedger(service.client, table_name, TIMING)
        assert ledger.claim(request()).won
        assert service.table_requests() == [("POST", "Tables")]
        assert ledger.get(request().idempotency_key) is not None
        assert not TableLedger(service.client, table_name, TIMING).claim(request()).won  # a repeat sees it

    def test_reading_before_the_table_exists_finds_no_entry(self, azurite: Azurite, table_name: str) -> None:
        service = RecordingService(azurite)
        ledger = TableLedger(service.client, table_name, TIMING)
        assert ledger.get("d-1:production") is None
        assert ledger.claim_for_retry("d-1:production") is None
        assert service.table_requests() == []  # reads never create it

    def test_concurrent_first_claims_on_a_new_table_have_one_winner(self, azurite: Azurite, table_name: str) -> None:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        ledgers = [TableLedger(service, table_name, TIMING) for _ in range(6)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda ledger: ledger.claim(request("d-race")), ledgers))
        assert sum(r.won for r in results) == 1

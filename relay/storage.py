"""Azure Storage adapters: the delivery ledger in Table Storage and the retry queue.

Both live in the Function App's own storage account (``AzureWebJobsStorage``), reached by
connection string locally (Azurite) or by managed identity in Azure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy

from devops.client import PipelineRun
from relay.ledger import ClaimResult, EntryState, LedgerEntry, LedgerTiming
from relay.settings import Settings
from webhook.errors import StorageUnavailable
from webhook.routing import PipelineRunRequest

# Azurite's published, well-known development account and key: not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(*, blob_port: int = 10000, queue_port: int = 10001, table_port: int = 10002) -> str:
    """The connection string for Azurite on loopback (what ``UseDevelopmentStorage=true`` means)."""
    base = f"http://127.0.0.1:{{}}/{AZURITE_ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint={base.format(blob_port)};QueueEndpoint={base.format(queue_port)};"
        f"TableEndpoint={base.format(table_port)};"
    )


MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 60
# Fail fast: the HTTP answer has a deadline, so no long SDK-internal retry loops.
_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 5,
    "read_timeout": 10,
}
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:=-]{1,200}$")


def storage_clients(
    settings: Settings, *, credential_factory: Callable[[], Any]
) -> tuple[TableServiceClient, QueueServiceClient]:
    """Table and queue service clients for the host storage account."""
    conn = settings.storage_connection_string
    if conn:
        if conn.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
            conn = azurite_connection_string()
        return (
            TableServiceClient.from_connection_string(conn, **_CLIENT_OPTIONS),
            QueueServiceClient.from_connection_string(conn, **_CLIENT_OPTIONS),
        )
    account = settings.storage_account_name
    table_uri = settings.storage_table_uri or f"https://{account}.table.core.windows.net"
    queue_uri = settings.storage_queue_uri or f"https://{account}.queue.core.windows.net"
    credential = credential_factory()
    return (
        TableServiceClient(endpoint=table_uri, credential=credential, **_CLIENT_OPTIONS),
        QueueServiceClient(account_url=queue_uri, credential=credential, **_CLIENT_OPTIONS),
    )


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError):
        raise
    except AzureError as exc:
        raise StorageUnavailable(f"{what} unavailable ({type(exc).__name__})") from exc


def _table_keys(key: str) -> tuple[str, str]:
    delivery_id, _, rule = key.rpartition(":")
    if not _SAFE_KEY.match(delivery_id):
        # Table keys forbid / \ # ? and control characters; the sender chooses delivery ids.
        delivery_id = "h-" + hashlib.sha256(delivery_id.encode()).hexdigest()
    return delivery_id, rule


def _entry(key: str, entity: dict[str, Any]) -> LedgerEntry:
    run = None
    if entity.get("run_id") is not None or entity.get("state") == EntryState.STARTED:
        run_id = entity.get("run_id")
        run = PipelineRun(rule=key.rpartition(":")[2], pipeline_id=int(entity.get("pipeline_id", 0)),
                          run_id=int(run_id) if run_id is not None else None, url=entity.get("url"))  # fmt: skip
    return LedgerEntry(key=key, state=EntryState(entity["state"]), updated_at=float(entity["updated_at"]),
                       run=run, detail=str(entity.get("detail", "")))  # fmt: skip


class TableLedger:
    """The delivery ledger in Azure Table Storage: conditional insert, ETag-guarded takeover."""

    def __init__(
        self, service: TableServiceClient, table_name: str, timing: LedgerTiming,
        *, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._service = service
        self._table_name = table_name
        self._timing = timing
        self._clock = clock
        self._table: TableClient | None = None

    def _client(self) -> TableClient:
        if self._table is None:
            with _storage_errors("delivery ledger"):
                self._table = self._service.create_table_if_not_exists(self._table_name)
        return self._table

    def claim(self, key: str, *, from_queue: bool = False) -> ClaimResult:
        """Claim ``key`` for this attempt. Raises ``StorageUnavailable``."""
        pk, rk = _table_keys(key)
        now = self._clock()
        fresh = {"PartitionKey": pk, "RowKey": rk, "state": EntryState.CLAIMED.value, "updated_at": now,
                 "run_id": None, "url": None, "detail": ""}  # fmt: skip
        table = self._client()
        with _storage_errors("delivery ledger"):
            try:
                table.create_entity(fresh)
                return ClaimResult(True, _entry(key, fresh))
            except ResourceExistsError:
                pass
            existing = table.get_entity(pk, rk)
            entry = _entry(key, existing)
            if not self._timing.may_take_over(entry, now, from_queue=from_queue):
                return ClaimResult(False, entry)
            try:
                table.update_entity(fresh, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)  # fmt: skip
            except ResourceModifiedError:
                # Another attempt took it over between our read and write: it owns the key.
                return ClaimResult(False, _entry(key, table.get_entity(pk, rk)))
            return ClaimResult(True, _entry(key, fresh))

    def record(self, key: str, state: EntryState, *, run: PipelineRun | None = None, detail: str = "") -> None:
        """Record the outcome of the attempt that holds ``key``. Raises ``StorageUnavailable``."""
        pk, rk = _table_keys(key)
        entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "state": state.value,
                                  "updated_at": self._clock(), "detail": detail[:1000]}  # fmt: skip
        if run is not None:
            entity.update({"run_id": run.run_id, "url": run.url, "pipeline_id": run.pipeline_id})
        with _storage_errors("delivery ledger"):
            self._client().upsert_entity(entity, mode=UpdateMode.MERGE)


class StorageQueueRetry:
    """The durable retry queue; messages are base64 JSON, as the queue trigger expects."""

    def __init__(self, service: QueueServiceClient, queue_name: str) -> None:
        self._service = service
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self._queues: dict[str, QueueClient] = {}

    def _queue(self, name: str) -> QueueClient:
        if name not in self._queues:
            client = self._service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
            with _storage_errors("retry queue"), contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._queues[name] = client
        return self._queues[name]

    def enqueue(self, request: PipelineRunRequest, *, attempt: int, delay: float) -> None:
        """Send ``request`` for attempt ``attempt`` after ``delay`` s. Raises ``StorageUnavailable``."""
        message = json.dumps({"version": 1, "attempt": attempt, "request": request.model_dump()})
        visibility = int(min(max(0.0, delay), MAX_VISIBILITY_SECONDS))
        with _storage_errors("retry queue"):
            self._queue(self.queue_name).send_message(message, visibility_timeout=visibility, time_to_live=-1)

    def poison(self, raw_message: str, *, reason: str) -> None:
        """Park a message that will not be retried again, with the reason, for an operator."""
        message = json.dumps({"reason": reason, "message": raw_message})
        with _storage_errors("poison queue"):
            self._queue(self.poison_queue_name).send_message(message, time_to_live=-1)

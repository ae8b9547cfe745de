"""The delivery ledger in Azure Table Storage: conditional inserts and ETag-fenced writes.

Partition key: the delivery id (hashed when it holds characters table keys forbid); row key:
the rule. Every write after the claim carries the ETag the claim produced (``If-Match``):
a 412 means another attempt took the entry over, and the writer stops (``ClaimLost``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from relay.ledger import REOPENABLE, LedgerTiming, claimed_entry, reopened_entry
from relay.ports import Claim, ClaimLost, ClaimResult, EntryState, LedgerEntry, PipelineRun, StorageUnavailable
from relay.storage_clients import storage_errors
from webhook.routing import PipelineRunRequest

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:=-]{1,200}$")


def table_keys(key: str) -> tuple[str, str]:
    """(PartitionKey, RowKey) for a ledger key ``"{delivery_id}:{rule}"``."""
    delivery_id, _, rule = key.rpartition(":")
    if not _SAFE_KEY.match(delivery_id):
        # Table keys forbid / \\ # ? and control characters; the sender chooses delivery ids.
        delivery_id = "h-" + hashlib.sha256(delivery_id.encode()).hexdigest()
    return delivery_id, rule


def to_entity(entry: LedgerEntry) -> dict[str, Any]:
    pk, rk = table_keys(entry.key)
    run = entry.run
    return {
        "PartitionKey": pk,
        "RowKey": rk,
        "key": entry.key,
        "state": entry.state.value,
        "updated_at": entry.updated_at,
        "claimed_at": entry.claimed_at,
        "first_claimed_at": entry.first_claimed_at,
        "run_id": run.run_id if run else None,
        "url": run.url if run else None,
        "pipeline_id": run.pipeline_id if run else None,
        "detail": entry.detail[:1000],
        "request": entry.request.model_dump_json() if entry.request else None,
        "attempts": entry.attempts,
        "forced_by": entry.forced_by,
    }


def from_entity(entity: dict[str, Any]) -> LedgerEntry:
    key = str(entity.get("key") or f"{entity['PartitionKey']}:{entity['RowKey']}")
    run = None
    if entity.get("state") == EntryState.STARTED or entity.get("run_id") is not None:
        run_id = entity.get("run_id")
        run = PipelineRun(
            rule=key.rpartition(":")[2],
            pipeline_id=int(entity.get("pipeline_id") or 0),
            run_id=int(run_id) if run_id is not None else None,
            url=entity.get("url"),
        )
    request = entity.get("request")
    return LedgerEntry(
        key=key,
        state=EntryState(entity["state"]),
        updated_at=float(entity["updated_at"]),
        claimed_at=float(entity.get("claimed_at") or 0),
        first_claimed_at=float(entity.get("first_claimed_at") or 0),
        run=run,
        detail=str(entity.get("detail") or ""),
        request=PipelineRunRequest.model_validate_json(request) if request else None,
        attempts=int(entity.get("attempts") or 0),
        forced_by=str(entity.get("forced_by") or ""),
    )


def _etag(metadata: Any) -> str:
    return str(metadata["etag"])


class TableLedger:
    """``DeliveryLedger`` over one table.

    The template provisions the table, so the ledger does not check for it in every new
    process (a round trip on each cold first answer); an insert that finds no table creates it
    and tries again (a new storage account, Azurite). Reads of a missing table find no entry.
    """

    def __init__(
        self,
        service: TableServiceClient,
        table_name: str,
        timing: LedgerTiming,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._table_name = table_name
        self._timing = timing
        self._clock = clock
        self._table: TableClient | None = None

    @property
    def lease(self) -> float:
        return self._timing.lease

    def _client(self) -> TableClient:
        if self._table is None:  # no I/O: a client for the table by name
            self._table = self._service.get_table_client(self._table_name)
        return self._table

    def _insert(self, entity: dict[str, Any]) -> Any:
        """``create_entity``, creating the table first if the insert found none.

        Raises:
            ResourceExistsError: the entity exists.
        """
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            return self._client().create_entity(entity)
        except ResourceNotFoundError:  # an insert's only 404 is TableNotFound
            with contextlib.suppress(ResourceExistsError):  # another process created it meanwhile
                self._service.create_table(self._table_name)
            return self._client().create_entity(entity)

    def _read(self, key: str) -> tuple[LedgerEntry, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        pk, rk = table_keys(key)
        try:
            entity = self._client().get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        return from_entity(entity), _etag(entity.metadata)

    def get(self, key: str) -> LedgerEntry | None:
        with storage_errors("delivery ledger"):
            found = self._read(key)
        return found[0] if found else None

    def claim(self, request: PipelineRunRequest) -> ClaimResult:
        """Claim ``request``'s key for this attempt. Raises ``StorageUnavailable``."""
        from azure.core.exceptions import ResourceExistsError

        now = self._clock()
        entry = claimed_entry(request, now, None, fresh=True)
        with storage_errors("delivery ledger"):
            try:
                metadata = self._insert(to_entity(entry))
            except ResourceExistsError:
                taken = self._take_over(request.idempotency_key, request, by_retry=False)
                if taken is None:  # deleted between our insert and read: the sender's retry inserts anew
                    raise StorageUnavailable("delivery ledger entry vanished during the claim", retry_after=1) from None
                return taken
        return ClaimResult(entry, _claim(entry, _etag(metadata), fresh=True))

    def claim_for_retry(self, key: str) -> ClaimResult | None:
        """Claim a queued, released or expired entry for the retry worker (never a poisoned one)."""
        with storage_errors("delivery ledger"):
            return self._take_over(key, None, by_retry=True)

    def _take_over(self, key: str, request: PipelineRunRequest | None, *, by_retry: bool) -> ClaimResult | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        found = self._read(key)
        if found is None or (request is None and found[0].request is None):
            return None
        previous, etag = found
        now = self._clock()
        if not self._timing.may_take_over(previous, now, by_retry=by_retry):
            return ClaimResult(previous)
        fresh = self._timing.expired(previous, now)
        entry = claimed_entry(request or previous.request, now, previous, fresh=fresh)  # type: ignore[arg-type]
        try:
            metadata = self._client().update_entity(
                to_entity(entry), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            # Another attempt took it over between our read and write: it holds the key.
            current = self._read(key)
            return ClaimResult(current[0] if current else previous)
        return ClaimResult(entry, _claim(entry, _etag(metadata), fresh=fresh))

    def record(
        self,
        claim: Claim,
        state: EntryState,
        *,
        run: PipelineRun | None = None,
        detail: str = "",
        attempts: int | None = None,
    ) -> Claim:
        """Record the holder's outcome, conditional on its claim.

        Raises:
            ClaimLost: another attempt holds the entry now.
            StorageUnavailable: the table could not be written.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        pk, rk = table_keys(claim.key)
        change: dict[str, Any] = {
            "PartitionKey": pk,
            "RowKey": rk,
            "state": state.value,
            "updated_at": self._clock(),
            "detail": detail[:1000],
        }
        if run is not None:
            change.update(run_id=run.run_id, url=run.url, pipeline_id=run.pipeline_id)
        if attempts is not None:
            change["attempts"] = attempts
        with storage_errors("delivery ledger"):
            try:
                metadata = self._client().update_entity(
                    change, mode=UpdateMode.MERGE, etag=claim.etag, match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                raise ClaimLost(f"delivery {claim.key!r} is held by another attempt now") from None
        return replace(claim, etag=_etag(metadata), attempts=claim.attempts if attempts is None else attempts)

    def reopen(self, key: str, *, by: str) -> LedgerEntry | None:
        """As ``DeliveryLedger.reopen``; the write is conditional on the ETag read, so a reopen
        racing a retry or another operator changes nothing. Raises ``StorageUnavailable`` too."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        with storage_errors("delivery ledger"):
            found = self._read(key)
            if found is None:
                return None
            previous, etag = found
            if previous.state not in REOPENABLE:
                return None
            entry = reopened_entry(previous, by=by, now=self._clock())
            try:
                self._client().update_entity(
                    to_entity(entry), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                return None
        return entry


def _claim(entry: LedgerEntry, etag: str, *, fresh: bool) -> Claim:
    assert entry.request is not None
    return Claim(
        key=entry.key,
        etag=etag,
        claimed_at=entry.claimed_at,
        first_claimed_at=entry.first_claimed_at,
        request=entry.request,
        fresh=fresh,
        attempts=entry.attempts,
    )

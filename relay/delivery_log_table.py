"""The delivery log in Azure Table Storage (``DELIVERY_LOG_TABLE``, default ``relaydeliverylog``).

One partition per delivery (``d-<delivery id>``, hashed when the id holds characters table
keys forbid): row ``delivery`` is the record, rows ``rule-<name>`` are the rules' outcomes,
written separately because the retry worker updates a rule while other instances may update
another. Every write is conditional on the ETag it read (or an insert), and merges with what
is stored (``relay.delivery_records.merge_delivery``), so reports from several instances
never overwrite each other. Rejections are counters in partition ``rejections``, one row per
UTC hour and reason, incremented under an ETag. State marks share the table (partitions
``m-...``, ``relay.state_marks_table``) and are never purged.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from relay.conflicts import conflict_rounds
from relay.delivery_log import RejectionCount
from relay.delivery_records import DeliveryRecord, RuleRecord, hour_of, merge_delivery, merge_rule, stub_record
from relay.ports import StorageUnavailable
from relay.storage_clients import storage_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:=-]{1,200}$")
_HEADER = "delivery"
_REJECTIONS = "rejections"
WRITE_TRIES = 5
COUNTER_TRIES = 30  # every instance adds to the same hour's counter
_RECORD_FIELDS = (
    "source",
    "event",
    "model",
    "version",
    "to_stage",
    "from_stage",
    "alias",
    "answer",
    "detail",
    "origin",
    "forced_by",
    "replay_of",
    "replayed_by",
    "event_json",
)
_RULE_FIELDS = ("status", "pipeline_id", "run_id", "url", "detail", "origin", "forced_by", "attempts", "updated_at")


class Conflict(Exception):
    """A conditional write lost to another writer."""


def partition_of(delivery_id: str) -> str:
    if _SAFE_ID.match(delivery_id):
        return f"d-{delivery_id}"
    return "d-h-" + hashlib.sha256(delivery_id.encode()).hexdigest()


def header_entity(record: DeliveryRecord) -> dict[str, Any]:
    entity = {
        "PartitionKey": partition_of(record.delivery_id),
        "RowKey": _HEADER,
        "kind": "delivery",
        "delivery_id": record.delivery_id,
        "arrived_at": record.arrived_at,
        "first_arrived_at": record.first_arrived_at or record.arrived_at,
        "arrivals": record.arrivals,
        "http_status": record.http_status,
        "updated_at": record.arrived_at,
    }
    entity.update({name: getattr(record, name) for name in _RECORD_FIELDS})
    return entity


def rule_entity(delivery_id: str, rule: RuleRecord, *, arrived_at: float) -> dict[str, Any]:
    entity = {
        "PartitionKey": partition_of(delivery_id),
        "RowKey": f"rule-{rule.rule}",
        "kind": "rule",
        "delivery_id": delivery_id,
        "rule": rule.rule,
        "arrived_at": arrived_at,
    }
    entity.update({name: getattr(rule, name) for name in _RULE_FIELDS})
    return entity


def rule_from_entity(entity: Mapping[str, Any]) -> RuleRecord:
    def optional_int(name: str) -> int | None:
        value = entity.get(name)
        return int(value) if value is not None else None

    return RuleRecord(
        rule=str(entity["rule"]),
        status=str(entity["status"]),
        pipeline_id=optional_int("pipeline_id"),
        run_id=optional_int("run_id"),
        url=entity.get("url"),
        detail=str(entity.get("detail") or ""),
        origin=str(entity.get("origin") or "webhook"),
        forced_by=str(entity.get("forced_by") or ""),
        attempts=int(entity.get("attempts") or 0),
        updated_at=float(entity.get("updated_at") or 0),
    )


def record_from_entities(header: Mapping[str, Any] | None, rules: list[Mapping[str, Any]]) -> DeliveryRecord:
    rule_records = tuple(sorted((rule_from_entity(e) for e in rules), key=lambda r: r.rule))
    if header is None:  # only rule reports survived (the delivery's own write failed, or was purged)
        delivery_id = str(rules[0].get("delivery_id", "")) if rules else ""
        stub = stub_record(
            delivery_id, model="?", version=None, now=max((r.updated_at for r in rule_records), default=0.0)
        )
        return replace(stub, rules=rule_records)
    text = {name: header.get(name) for name in _RECORD_FIELDS}
    return DeliveryRecord(
        delivery_id=str(header["delivery_id"]),
        arrived_at=float(header["arrived_at"]),
        source=str(text["source"] or "?"),
        event=str(text["event"] or "?"),
        model=str(text["model"] or "?"),
        version=text["version"],
        answer=str(text["answer"] or "?"),
        http_status=int(header.get("http_status") or 0),
        detail=str(text["detail"] or ""),
        to_stage=text["to_stage"],
        from_stage=text["from_stage"],
        alias=text["alias"],
        rules=rule_records,
        origin=str(text["origin"] or "webhook"),
        forced_by=str(text["forced_by"] or ""),
        replay_of=str(text["replay_of"] or ""),
        replayed_by=str(text["replayed_by"] or ""),
        event_json=str(text["event_json"] or ""),
        first_arrived_at=float(header.get("first_arrived_at") or 0),
        arrivals=int(header.get("arrivals") or 0),
    )


class TableDeliveryLogStore:
    """``DeliveryLogStore`` over one table, created on first use. Raises ``StorageUnavailable``."""

    def __init__(self, service: TableServiceClient, table_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self.table_name = table_name
        self._clock = clock
        self._table: TableClient | None = None

    def client(self) -> TableClient:
        if self._table is None:
            with storage_errors("delivery log"):
                self._table = self._service.create_table_if_not_exists(self.table_name)
        return self._table

    # -- writes ----------------------------------------------------------------------------
    def write_delivery(self, record: DeliveryRecord) -> None:
        """Merge ``record`` into the stored one: the rules first, the header (and its arrival count) last."""
        self._retry(lambda: self._write_delivery(record), f"delivery {record.delivery_id!r}")

    def _write_delivery(self, record: DeliveryRecord) -> None:
        header, rules = self._read_partition(partition_of(record.delivery_id))
        stored = record_from_entities(header, list(rules.values())) if header or rules else None
        merged = merge_delivery(stored, record)
        arrived = merged.first_arrived_at or merged.arrived_at
        for rule in merged.rules:
            entity = rules.get(rule.rule)
            if entity is None or rule_from_entity(entity) != rule:
                self._put(rule_entity(record.delivery_id, rule, arrived_at=arrived), entity)
        self._put(header_entity(merged), header)

    def write_rule(self, delivery_id: str, rule: RuleRecord, *, model: str = "", version: str | None = None) -> None:
        """Merge one rule's report; a stub record stands in when the delivery's own write was lost."""
        self._retry(lambda: self._write_rule(delivery_id, rule, model, version), f"delivery {delivery_id!r}")

    def _write_rule(self, delivery_id: str, rule: RuleRecord, model: str, version: str | None) -> None:
        pk = partition_of(delivery_id)
        header = self._get(pk, _HEADER)
        entity = self._get(pk, f"rule-{rule.rule}")
        merged = merge_rule(rule_from_entity(entity) if entity else None, rule)
        arrived = float(header.get("first_arrived_at") or rule.updated_at) if header else rule.updated_at
        if entity is None or rule_from_entity(entity) != merged:
            self._put(rule_entity(delivery_id, merged, arrived_at=arrived), entity)
        if header is None:
            stub = stub_record(delivery_id, model=model, version=version, now=rule.updated_at)
            self._put(header_entity(stub), None)

    def add_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (hour, reason), count in counts.items():
            self._retry(
                functools.partial(self._add_rejections, hour, reason, count), "rejection counter", tries=COUNTER_TRIES
            )

    def _add_rejections(self, hour: str, reason: str, count: int) -> None:
        current = self._get(_REJECTIONS, f"{hour}-{reason}")
        total = int(current.get("count") or 0) + count if current else count
        entity = {
            "PartitionKey": _REJECTIONS,
            "RowKey": f"{hour}-{reason}",
            "kind": "rejections",
            "hour": hour,
            "reason": reason,
            "count": total,
            "updated_at": self._clock(),
        }
        self._put(entity, current)

    def purge(self, *, before: float) -> int:
        """Delete records, rule reports and counters last written before ``before`` (never marks)."""
        from azure.core.exceptions import ResourceNotFoundError

        deleted = 0
        with storage_errors("delivery log"):
            old = self.client().query_entities(
                "kind ne 'mark' and updated_at lt @before",
                parameters={"before": before},
                select=["PartitionKey", "RowKey"],
            )
            for entity in list(old):
                try:
                    self.client().delete_entity(entity["PartitionKey"], entity["RowKey"])
                except ResourceNotFoundError:
                    continue
                deleted += 1
        return deleted

    # -- reads -----------------------------------------------------------------------------
    def get(self, delivery_id: str) -> DeliveryRecord | None:
        header, rules = self._read_partition(partition_of(delivery_id))
        if header is None and not rules:
            return None
        return record_from_entities(header, list(rules.values()))

    def recent(self, *, since: float) -> list[DeliveryRecord]:
        """Records that arrived at or after ``since``, newest first (two queries)."""
        with storage_errors("delivery log"):
            headers = list(
                self.client().query_entities("kind eq 'delivery' and arrived_at ge @since", parameters={"since": since})
            )
            if not headers:
                return []
            first = min(float(h.get("first_arrived_at") or h["arrived_at"]) for h in headers)
            rules: dict[str, list[Any]] = {}
            for entity in self.client().query_entities(
                "kind eq 'rule' and arrived_at ge @first", parameters={"first": first}
            ):
                rules.setdefault(entity["PartitionKey"], []).append(entity)
        records = [record_from_entities(h, rules.get(h["PartitionKey"], [])) for h in headers]
        return sorted(records, key=lambda r: r.arrived_at, reverse=True)

    def rejections(self, *, since: float) -> list[RejectionCount]:
        with storage_errors("delivery log"):
            found = self.client().query_entities(
                "PartitionKey eq @pk and RowKey ge @first", parameters={"pk": _REJECTIONS, "first": hour_of(since)}
            )
            counts = [RejectionCount(str(e["hour"]), str(e["reason"]), int(e["count"])) for e in found]
        return sorted(counts, key=lambda c: (c.hour, c.reason))

    # -- conditional writes ----------------------------------------------------------------
    def _read_partition(self, pk: str) -> tuple[Any | None, dict[str, Any]]:
        with storage_errors("delivery log"):
            entities = list(self.client().query_entities("PartitionKey eq @pk", parameters={"pk": pk}))
        header = next((e for e in entities if e["RowKey"] == _HEADER), None)
        return header, {str(e["rule"]): e for e in entities if e["RowKey"].startswith("rule-")}

    def _get(self, pk: str, rk: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        with storage_errors("delivery log"):
            try:
                return self.client().get_entity(pk, rk)
            except ResourceNotFoundError:
                return None

    def _put(self, entity: dict[str, Any], read: Any | None) -> None:
        """Insert ``entity``, or replace what was read, only if nobody wrote it since."""
        put_conditionally(self.client(), entity, read, what="delivery log")

    def _retry(self, write: Callable[[], None], what: str, *, tries: int = WRITE_TRIES) -> None:
        for _ in conflict_rounds(tries):
            try:
                write()
                return
            except Conflict:
                continue
        raise StorageUnavailable(f"delivery log: {what} kept changing under {tries} writes", retry_after=5)


def put_conditionally(table: TableClient, entity: dict[str, Any], read: Any | None, *, what: str) -> Any:
    """Insert (``read`` is None) or ETag-guarded replace; ``Conflict`` when another writer won."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    entity = {k: v for k, v in entity.items() if v is not None}
    with storage_errors(what):
        try:
            if read is None:
                return table.create_entity(entity)
            return table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=read.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise Conflict(what) from None

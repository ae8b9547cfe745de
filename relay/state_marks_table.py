"""State marks in the delivery log's table: one entity per (model, selector), ETag-guarded.

Partition ``m-<sha256(model)>`` (model names may hold characters table keys forbid), row
``<sha256(selector)>``; the rules' marks are one JSON property, so one read and at most one
conditional write decide an event however many rules it matched. ``kind`` is ``mark``: the
delivery log's purge never touches them.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from relay.delivery_log_table import Conflict, put_conditionally
from relay.state_marks import MarkConflict, SelectorState, StateMark
from relay.storage_clients import storage_errors

if TYPE_CHECKING:
    from relay.delivery_log_table import TableDeliveryLogStore


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:48]


def mark_keys(model: str, selector: str) -> tuple[str, str]:
    return f"m-{_digest(model)}", _digest(selector)


class TableStateMarks:
    """``StateMarks`` sharing the delivery log's table (and its lazily created client)."""

    def __init__(self, log_store: TableDeliveryLogStore) -> None:
        self._store = log_store

    def get(self, model: str, selector: str) -> SelectorState:
        """Raises ``StorageUnavailable``."""
        from azure.core.exceptions import ResourceNotFoundError

        pk, rk = mark_keys(model, selector)
        with storage_errors("state marks"):
            try:
                entity = self._store.client().get_entity(pk, rk)
            except ResourceNotFoundError:
                return SelectorState(model, selector)
        marks = {rule: StateMark(*values) for rule, values in json.loads(entity.get("marks") or "{}").items()}
        return SelectorState(model, selector, marks, etag=str(entity.metadata["etag"]))

    def put(self, state: SelectorState) -> SelectorState:
        """Raises ``MarkConflict`` (someone wrote since ``state`` was read), ``StorageUnavailable``."""
        pk, rk = mark_keys(state.model, state.selector)
        marks = {
            rule: [m.version, m.observed_at, m.delivery_id, m.origin, m.updated_at] for rule, m in state.marks.items()
        }
        entity: dict[str, Any] = {
            "PartitionKey": pk,
            "RowKey": rk,
            "kind": "mark",
            "model": state.model,
            "selector": state.selector,
            "marks": json.dumps(marks, sort_keys=True),
        }
        read = _Read(state.etag) if state.etag else None
        try:
            metadata = put_conditionally(self._store.client(), entity, read, what="state marks")
        except Conflict:
            raise MarkConflict(f"marks of {state.model!r} {state.selector} changed") from None
        return SelectorState(state.model, state.selector, dict(state.marks), etag=str(metadata["etag"]))


class _Read:
    """What ``put_conditionally`` needs of an entity that was read: its ETag."""

    def __init__(self, etag: str) -> None:
        self.metadata = {"etag": etag}

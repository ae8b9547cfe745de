"""State marks: per model, stage or alias, and rule, the version the relay last dispatched.

A webhook says "alias champion now points at version 7"; catch-up reads the same from the
registry when the webhook never came. Both meet here: one entity per (model, selector) holds,
per rule, the version last dispatched, when that state was observed (the event's time, or the
moment catch-up read the registry), by which delivery id and from which origin (webhook,
replay, catch-up, or baseline: the state catch-up found the first time it looked, recorded
without deploying). Writes are conditional on the entity's ETag, so two deciders never both
move a mark (``MarkConflict``). Marks are never purged: they are what "already the last one
triggered" means, and there is one per model, selector and rule.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from webhook.events import EventKind, RegistryEvent

EPOCH_MODEL = "\x00catch-up-epoch"  # the pseudo-model whose marks record when catch-up first saw a rule


class MarkConflict(Exception):
    """Another decider wrote the marks since they were read: read again and decide again."""


@dataclass(frozen=True)
class StateMark:
    version: str
    observed_at: float  # unix seconds: the event's time, or when catch-up read the registry
    delivery_id: str
    origin: str  # webhook | replay | catch-up | baseline
    updated_at: float = 0.0


@dataclass(frozen=True)
class SelectorState:
    """Every rule's mark for one (model, selector); ``etag`` is None until first written."""

    model: str
    selector: str
    marks: Mapping[str, StateMark] = field(default_factory=dict)
    etag: str | None = None

    def with_marks(self, changes: Mapping[str, StateMark]) -> SelectorState:
        return replace(self, marks={**self.marks, **changes})


class StateMarks(Protocol):
    """Raises ``StorageUnavailable`` from every method; ``put`` raises ``MarkConflict``."""

    def get(self, model: str, selector: str) -> SelectorState: ...

    def put(self, state: SelectorState) -> SelectorState:
        """Write ``state`` if nobody wrote it since it was read; returns it with its new ETag."""
        ...


def selector_of(event: RegistryEvent) -> str | None:
    """``alias:<name>`` or ``stage:<name>`` for events that set a model's state; else None."""
    if event.kind is EventKind.ALIAS_SET and event.alias:
        return f"alias:{event.alias}"
    if event.kind is EventKind.STAGE_TRANSITIONED and event.to_stage:
        return f"stage:{event.to_stage.casefold()}"  # stages compare case-insensitively
    return None


class InMemoryStateMarks:
    """Process-local marks (no storage configured, and tests); same conditional writes."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], SelectorState] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, model: str, selector: str) -> SelectorState:
        with self._lock:
            return self._states.get((model, selector)) or SelectorState(model, selector)

    def put(self, state: SelectorState) -> SelectorState:
        key = (state.model, state.selector)
        with self._lock:
            stored = self._states.get(key)
            if (stored.etag if stored else None) != state.etag:
                raise MarkConflict(f"marks of {state.model!r} {state.selector} changed")
            written = replace(state, etag=str(next(self._etags)))
            self._states[key] = written
            return written

"""The state gate: a late delivery of a state catch-up already started starts nothing.

Catch-up starts a missed alias or stage move under a delivery id of its own (the sender's id
never reached the relay), so the ledger alone cannot tell that MLflow's late retry of the same
move is a duplicate. The gate decides by state, before any claim, for each rule the event
matched (the ``StateGate`` port):

- the rule's mark says catch-up dispatched *this* version for this selector, observed at or
  after the event's own time → answered ``duplicate`` (with catch-up's run), nothing claimed;
  unless catch-up's attempt ended without a run (released, refused, poisoned, gone): then
  this delivery proceeds and takes the mark over, so catch-up will not start it again;
- otherwise the delivery proceeds, and when it is the newest word on this selector its mark
  is moved to (version, event time, delivery id) first. The move is conditional on the marks'
  ETag, so a catch-up deciding at the same moment sees it, or this delivery sees catch-up's.

An event older than the mark moves nothing and is dispatched as before (the job re-checks the
alias or stage before deploying). Only stage and alias events pass through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from relay.answers import RunOutcome
from relay.conflicts import conflict_rounds
from relay.decisions import log_decision
from relay.ports import DeliveryLedger, EntryState, StorageUnavailable
from relay.state_marks import MarkConflict, SelectorState, StateMark, StateMarks, selector_of
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest

_RUN_OWNED = frozenset({EntryState.STARTED, EntryState.QUEUED, EntryState.CLAIMED})


class StateMarkGate:
    """``StateGate`` over the state marks and the ledger (to read catch-up's run)."""

    def __init__(self, marks: StateMarks, ledger: DeliveryLedger, *, clock: Callable[[], float] = time.time) -> None:
        self._marks = marks
        self._ledger = ledger
        self._clock = clock

    def screen(
        self, event: RegistryEvent, requests: Sequence[PipelineRunRequest], *, origin: str = "webhook"
    ) -> tuple[list[RunOutcome], list[PipelineRunRequest]]:
        """Raises ``StorageUnavailable``: the marks cannot be read or stay contended."""
        selector = selector_of(event)
        if selector is None or not requests or event.version is None:
            return [], list(requests)
        for _ in conflict_rounds():
            state = self._marks.get(event.model_name, selector)
            decided, remaining, moves = self._decide(event, requests, state, origin)
            if not moves:
                return decided, remaining
            try:
                self._marks.put(state.with_marks(moves))
            except MarkConflict:
                continue
            return decided, remaining
        raise StorageUnavailable(f"state marks of {event.model_name!r} {selector} keep changing; retry", retry_after=2)

    def _decide(
        self, event: RegistryEvent, requests: Sequence[PipelineRunRequest], state: SelectorState, origin: str
    ) -> tuple[list[RunOutcome], list[PipelineRunRequest], dict[str, StateMark]]:
        observed = event.event_time.timestamp()
        version = event.version or ""
        decided: list[RunOutcome] = []
        remaining: list[PipelineRunRequest] = []
        moves: dict[str, StateMark] = {}
        now = self._clock()
        for request in requests:
            mark = state.marks.get(request.rule)
            mine = StateMark(version, observed, event.delivery_id, origin, now)
            if mark is not None and _caught_up(mark, event, observed):
                outcome = self._catch_up_outcome(request, mark, state.selector)
                if outcome is not None:
                    decided.append(outcome)
                    continue
                # Catch-up's attempt left no run: this delivery carries the state from here on.
                moves[request.rule] = StateMark(
                    version, max(observed, mark.observed_at), event.delivery_id, origin, now
                )
            elif mark is None or (
                observed >= mark.observed_at and (mark.version, mark.delivery_id) != (version, event.delivery_id)
            ):
                moves[request.rule] = mine
            remaining.append(request)
        return decided, remaining, moves

    def _catch_up_outcome(self, request: PipelineRunRequest, mark: StateMark, selector: str) -> RunOutcome | None:
        entry = self._ledger.get(f"{mark.delivery_id}:{request.rule}")
        if entry is None or entry.state not in _RUN_OWNED:
            return None
        detail = (
            f"catch-up ({mark.delivery_id}) already started version {mark.version} for {selector}; "
            f"this late delivery starts nothing"
        )
        log_decision("duplicate", request.correlation, run_id=entry.run.run_id if entry.run else None, detail=detail)
        return RunOutcome(request, "duplicate", run=entry.run, detail=detail)


def _caught_up(mark: StateMark, event: RegistryEvent, observed: float) -> bool:
    """Whether catch-up dispatched this very state after the event happened."""
    return (
        mark.origin == "catch-up"
        and mark.version == (event.version or "")
        and mark.delivery_id != event.delivery_id
        and observed <= mark.observed_at
    )

"""The state gate on its own: marks moved under their ETag, catch-up's run found in the ledger."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from relay.ledger import InMemoryLedger, LedgerTiming
from relay.ports import EntryState, PipelineRun, StorageUnavailable
from relay.state_gate import StateMarkGate
from relay.state_marks import InMemoryStateMarks, MarkConflict, StateMark
from tests.builders import alias_event, run_request
from webhook.events import EventKind, RegistryEvent
from webhook.routing import PipelineRunRequest

T = 1_800_000_000.0


def event(version: str, delivery_id: str, at: float, kind: EventKind = EventKind.ALIAS_SET) -> RegistryEvent:
    return alias_event(version, delivery_id, at=datetime.fromtimestamp(at, tz=UTC), kind=kind)


def request(delivery_id: str, version: str = "7", rule: str = "deploy") -> PipelineRunRequest:
    return run_request(delivery_id, rule, version=version)


@pytest.fixture
def ledger():
    return InMemoryLedger(LedgerTiming(lease=30.0))


@pytest.fixture
def marks():
    return InMemoryStateMarks()


def caught_up(marks, ledger, *, state=EntryState.STARTED):
    """Catch-up dispatched version 7 at ``T`` under ``catch-up-1``; its ledger entry is ``state``."""
    marks.put(marks.get("fraud", "alias:champion").with_marks({"deploy": StateMark("7", T, "catch-up-1", "catch-up")}))
    claim = ledger.claim(request("catch-up-1")).claim
    ledger.record(claim, state, run=PipelineRun("deploy", 13, 99, "u") if state is EntryState.STARTED else None)


def test_an_event_that_sets_no_state_passes_untouched(marks, ledger):
    gate = StateMarkGate(marks, ledger)
    decided, remaining = gate.screen(event("7", "d-1", T, kind=EventKind.VERSION_CREATED), [request("d-1")])
    assert (decided, remaining) == ([], [request("d-1")])
    assert marks.get("fraud", "alias:champion").marks == {}


def test_the_newest_delivery_moves_the_mark_first(marks, ledger):
    StateMarkGate(marks, ledger).screen(event("7", "d-1", T), [request("d-1")])
    mark = marks.get("fraud", "alias:champion").marks["deploy"]
    assert (mark.version, mark.observed_at, mark.delivery_id) == ("7", T, "d-1")
    StateMarkGate(marks, ledger).screen(event("6", "d-0", T - 60), [request("d-0", "6")])  # older: moves nothing
    assert marks.get("fraud", "alias:champion").marks["deploy"].delivery_id == "d-1"


def test_a_late_delivery_of_catch_ups_state_is_answered_with_catch_ups_run(marks, ledger):
    caught_up(marks, ledger)
    gate = StateMarkGate(marks, ledger)
    decided, remaining = gate.screen(event("7", "mlflow-late", T - 30), [request("mlflow-late")])
    assert remaining == [] and [(o.status, o.run.run_id if o.run else None) for o in decided] == [("duplicate", 99)]


def test_when_catch_ups_attempt_started_nothing_the_late_delivery_takes_over(marks, ledger):
    caught_up(marks, ledger, state=EntryState.RELEASED)
    gate = StateMarkGate(marks, ledger)
    decided, remaining = gate.screen(event("7", "mlflow-late", T - 30), [request("mlflow-late")])
    assert decided == [] and remaining == [request("mlflow-late")]
    assert marks.get("fraud", "alias:champion").marks["deploy"].delivery_id == "mlflow-late"


def test_a_concurrent_writer_makes_the_gate_decide_again(marks, ledger):
    class RacingMarks(InMemoryStateMarks):
        """The first put loses to catch-up, which dispatched the same version meanwhile."""

        raced = False

        def put(self, state):
            if not self.raced:
                self.raced = True
                caught_up(self, ledger)
                raise MarkConflict("changed")
            return super().put(state)

    racing = RacingMarks()
    decided, remaining = StateMarkGate(racing, ledger).screen(
        event("7", "mlflow-late", T - 30), [request("mlflow-late")]
    )
    assert remaining == [] and decided[0].status == "duplicate"


def test_marks_that_keep_changing_answer_503(marks, ledger):
    class Contended(InMemoryStateMarks):
        def put(self, state):
            raise MarkConflict("changed")

    with pytest.raises(StorageUnavailable, match="keep changing"):
        StateMarkGate(Contended(), ledger).screen(event("7", "d-1", T), [request("d-1")])


def test_a_burst_on_one_alias_is_carried_without_a_503(ledger):
    class SlowMarks(InMemoryStateMarks):
        """A storage round trip between read and write, so the writers of the burst collide.

        Each of the burst's writers loses at most once to each other one, so eight rounds carry
        a burst of eight events that all move the mark (same time, different versions)."""

        def get(self, model, selector):
            state = super().get(model, selector)
            time.sleep(0.005)
            return state

    marks, burst = SlowMarks(), 8
    gate, start = StateMarkGate(marks, ledger), threading.Barrier(burst)

    def promote(n: int):
        start.wait()
        return gate.screen(event(str(n), f"d-{n}", T), [request(f"d-{n}", str(n))])  # one second: all move

    with ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(promote, range(burst)))
    assert all(remaining for _, remaining in results)

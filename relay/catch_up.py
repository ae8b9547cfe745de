"""Catch-up: start, once, what the registry shows and no delivery ever brought.

For every stage or alias of every model the rules can match, the registry's current version
is compared, per rule, with the state mark (``relay.state_marks``): the version last
dispatched for that model, rule and selector, and by which delivery.

- same version, and that delivery's run started, is queued or in flight, or was refused or
  poisoned (an operator's matter: ``deliveries replay``, ``retries redrive``) → nothing;
- same version, but that delivery was released (nothing started, nothing queued, and the
  sender gave up) → its own request is dispatched again, under its own ledger key;
- same version, but that delivery never claimed anything (older than the lease) → a new
  catch-up delivery;
- another version, or no mark while catch-up already watches the rule → a catch-up delivery;
- no mark the first time catch-up sees the rule → the state is recorded as the baseline and
  nothing is started: catch-up never replays history, only moves it missed while watching;
- a mark newer than this look (a delivery arrived meanwhile) → nothing.

A catch-up delivery moves the marks first (ETag-guarded, ``relay.state_gate`` explains why),
then goes through the service's dispatch: claims, ledger, retry queue, exactly as a webhook.
Its delivery id is derived (``catch_up_events.catch_up_delivery_id``), and it is logged in
the delivery log with origin ``catch-up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from relay.answers import RunOutcome, outcomes_answer
from relay.catch_up_events import catch_up_delivery_id, from_stage_rules, models_for, synthetic_event
from relay.conflicts import conflict_rounds
from relay.decisions import log_decision
from relay.delivery_records import rule_record
from relay.ports import DeliveryLedger, EntryState, LedgerEntry
from relay.record_ports import DeliveryLog
from relay.registries import ObservedState, RegistryReader, RegistryUnavailable
from relay.service import RelayService
from relay.state_marks import EPOCH_MODEL, MarkConflict, SelectorState, StateMark, StateMarks
from webhook.errors import RelayError

_FAILED_OUTCOMES = frozenset({"refused", "unavailable", "error", "in_progress"})


@dataclass(frozen=True)
class CatchUpAction:
    """What catch-up did (or, in a dry run, would do) for one model, selector and rule."""

    model: str
    selector: str
    version: str
    rule: str
    action: str  # start | redispatch | baseline | nothing | skipped | failed
    reason: str
    delivery_id: str = ""
    outcome: str = ""
    run_id: int | None = None


@dataclass
class CatchUpReport:
    registry: str
    dry_run: bool
    actions: list[CatchUpAction] = field(default_factory=list)
    error: str = ""

    @property
    def started(self) -> list[CatchUpAction]:
        return [a for a in self.actions if a.action in ("start", "redispatch")]

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(a.action == "failed" or a.outcome in _FAILED_OUTCOMES for a in self.actions)


@dataclass(frozen=True)
class _Plan:
    starts: dict[str, str]  # rule -> reason
    redispatch: dict[str, LedgerEntry]
    moves: dict[str, StateMark]
    actions: list[CatchUpAction]
    delivery_id: str


class CatchUp:
    """Runs catch-up for one registry at a time (the timer function and ``mlflow-relay catch-up``)."""

    def __init__(
        self,
        *,
        service: RelayService,
        ledger: DeliveryLedger,
        marks: StateMarks,
        log: DeliveryLog | None,
        ledger_retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._ledger = ledger
        self._marks = marks
        self._log = log
        self._retention = ledger_retention
        self._clock = clock

    def run(self, reader: RegistryReader, *, dry_run: bool = False) -> CatchUpReport:
        """Never raises for the registry or a run: failures are in the report (and logged ERROR).

        Raises:
            ConfigurationError: the rules file is invalid (every delivery meets it too).
        """
        report = CatchUpReport(reader.spec.id, dry_run)
        rules = self._service.rules()
        models = models_for(rules, reader.spec.kind)
        if models.empty:
            return report
        looked_at = self._clock()  # before reading: a mark newer than this came from a delivery meanwhile
        try:
            states = reader.states(models)
            epoch = self._marks.get(EPOCH_MODEL, reader.spec.id)
        except (RegistryUnavailable, RelayError) as exc:
            report.error = exc.detail
            log_decision("catch_up_failed", level=logging.ERROR, detail=f"{reader.spec.id}: {exc.detail}")
            return report
        seen: set[str] = set()
        for state in states:
            try:
                seen |= self._catch_up(state, epoch, looked_at, report)
            except RelayError as exc:
                report.actions.append(
                    CatchUpAction(state.model, state.selector, state.version, "*", "failed", exc.detail)
                )
                log_decision(
                    "catch_up_failed",
                    {"model": state.model, "version": state.version},
                    level=logging.ERROR,
                    detail=f"{state.selector}: {exc.detail}",
                )
        if not dry_run and seen - set(epoch.marks):
            try:
                self._watch(reader.spec.id, seen, looked_at)
            except RelayError as exc:  # the baselines are recorded next time; the runs above stand
                report.error = exc.detail
                log_decision("catch_up_failed", level=logging.ERROR, detail=f"{reader.spec.id}: {exc.detail}")
        return report

    def _catch_up(
        self, state: ObservedState, epoch: SelectorState, looked_at: float, report: CatchUpReport
    ) -> set[str]:
        probe = synthetic_event(state, observed_at=looked_at, delivery_id="catch-up-probe")
        rules = self._service.rules()
        for rule in from_stage_rules(rules, probe):
            report.actions.append(
                CatchUpAction(
                    state.model,
                    state.selector,
                    state.version,
                    rule,
                    "skipped",
                    "a from_stage condition: the registry does not tell where the version came from",
                )
            )
        matched = [r.rule for r in self._service.route(probe)]
        if not matched:
            return set()
        for _ in conflict_rounds():
            current = self._marks.get(state.model, state.selector)
            plan = self._plan(state, matched, current, epoch, looked_at)
            if report.dry_run or not plan.moves:
                break
            try:
                self._marks.put(current.with_marks(plan.moves))
                break
            except MarkConflict:
                continue
        else:
            raise RelayError(f"state marks of {state.model!r} kept changing; catch-up will look again next time")
        report.actions.extend(plan.actions)
        if not report.dry_run:
            self._dispatch(state, plan, looked_at, report)
        return set(matched)

    def _plan(
        self, state: ObservedState, rules: list[str], current: SelectorState, epoch: SelectorState, looked_at: float
    ) -> _Plan:
        starts: dict[str, str] = {}
        redispatch: dict[str, LedgerEntry] = {}
        moves: dict[str, StateMark] = {}
        actions = []
        for rule in rules:
            mark = current.marks.get(rule)
            action, reason, entry = self._decide(state, rule, mark, rule in epoch.marks, looked_at)
            if action == "start":
                starts[rule] = reason
            elif action == "redispatch" and entry is not None:
                redispatch[rule] = entry
            elif action == "baseline":
                moves[rule] = StateMark(state.version, looked_at, "", "baseline", looked_at)
            if action not in ("start",):
                actions.append(
                    CatchUpAction(
                        state.model,
                        state.selector,
                        state.version,
                        rule,
                        action,
                        reason,
                        entry.key.rpartition(":")[0] if entry else "",
                    )
                )
        delivery_id = catch_up_delivery_id(state, {r: current.marks.get(r) for r in starts}) if starts else ""
        moves.update({r: StateMark(state.version, looked_at, delivery_id, "catch-up", looked_at) for r in starts})
        actions.extend(
            CatchUpAction(state.model, state.selector, state.version, r, "start", why, delivery_id)
            for r, why in starts.items()
        )
        return _Plan(starts, redispatch, moves, actions, delivery_id)

    def _decide(
        self,
        state: ObservedState,
        rule: str,
        mark: StateMark | None,
        watched: bool,
        looked_at: float,
    ) -> tuple[str, str, LedgerEntry | None]:
        if mark is None:
            if watched:
                return "start", "no delivery ever set this state for this rule", None
            return "baseline", "first look at this rule: the current state is recorded, nothing started", None
        if mark.observed_at > looked_at:
            return "nothing", f"a delivery ({mark.delivery_id}) arrived while catch-up looked", None
        if mark.version != state.version:
            return "start", f"the registry says {state.version}; last dispatched: {mark.version} ({mark.origin})", None
        if mark.origin == "baseline":
            return "nothing", "the state catch-up found when it began watching this rule", None
        entry = self._ledger.get(f"{mark.delivery_id}:{rule}")
        if entry is None:
            if looked_at - mark.updated_at > self._ledger.lease and looked_at - mark.updated_at < self._retention:
                return "start", f"delivery {mark.delivery_id} set this state but never claimed a run", None
            return "nothing", f"already dispatched by {mark.delivery_id}", None
        if entry.state is EntryState.RELEASED:
            return "redispatch", f"delivery {mark.delivery_id} started nothing and was not retried", entry
        run = f" (run {entry.run.run_id})" if entry.run and entry.run.run_id else ""
        return "nothing", f"already the last one dispatched: {mark.delivery_id} is {entry.state.value}{run}", None

    def _dispatch(self, state: ObservedState, plan: _Plan, looked_at: float, report: CatchUpReport) -> None:
        if plan.starts:
            event = synthetic_event(state, observed_at=looked_at, delivery_id=plan.delivery_id)
            requests = [r for r in self._service.route(event) if r.rule in plan.starts]
            outcomes = self._service.dispatch(requests)
            if self._log is not None:
                self._log.delivered(event, outcomes, outcomes_answer(event, outcomes), origin="catch-up")
            self._note(report, plan.delivery_id, outcomes)
        for entry in plan.redispatch.values():
            assert entry.request is not None  # a released entry keeps its verified request
            outcomes = self._service.dispatch([entry.request])
            if self._log is not None:
                for outcome in outcomes:
                    self._log.rule_changed(
                        entry.request.delivery_id,
                        rule_record(outcome, now=self._clock(), origin="catch-up"),
                        model=state.model,
                        version=state.version,
                    )
            self._note(report, entry.request.delivery_id, outcomes)

    def _note(self, report: CatchUpReport, delivery_id: str, outcomes: list[RunOutcome]) -> None:
        for outcome in outcomes:
            for i, action in enumerate(report.actions):
                if action.delivery_id == delivery_id and action.rule == outcome.request.rule:
                    run_id = outcome.run.run_id if outcome.run else None
                    report.actions[i] = replace(action, outcome=outcome.status, run_id=run_id)
            level = logging.ERROR if outcome.status in _FAILED_OUTCOMES else logging.WARNING
            decision = "catch_up_failed" if outcome.status in _FAILED_OUTCOMES else "caught_up"
            log_decision(
                decision,
                outcome.request.correlation,
                level=level,
                status=outcome.status,
                run_id=outcome.run.run_id if outcome.run else None,
                detail=f"a move no delivery brought: {outcome.detail or outcome.status}",
            )

    def _watch(self, registry: str, rules: set[str], looked_at: float) -> None:
        """Remember that catch-up watches ``rules`` from now on (their baselines are recorded)."""
        for _ in conflict_rounds():
            epoch = self._marks.get(EPOCH_MODEL, registry)
            new = {r: StateMark("", looked_at, "", "baseline", looked_at) for r in rules if r not in epoch.marks}
            if not new:
                return
            try:
                self._marks.put(epoch.with_marks(new))
                return
            except MarkConflict:
                continue
        raise RelayError(f"catch-up's marks for {registry!r} kept changing; it will look again next time")

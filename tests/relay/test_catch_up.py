"""Catch-up and the state gate with in-memory ledger, marks and log, and a starter that records.

Catch-up starts a move no delivery brought, once; never the state it found when it began
watching; never again the state last dispatched; and the gate answers a late delivery of a
state catch-up handled ``duplicate``, while a later re-set of the same alias deploys again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from relay.catch_up import CatchUp
from relay.catch_up_events import catch_up_delivery_id, models_for
from relay.delivery_log import BackgroundDeliveryLog, InMemoryDeliveryLogStore
from relay.ledger import InMemoryLedger, LedgerTiming
from relay.ports import DevOpsUnavailable, EntryState, PipelineRun
from relay.registries import ModelFilter, ObservedState
from relay.registry_specs import RegistrySpec
from relay.secrets import RelaySecrets
from relay.service import RelayService
from relay.state_gate import StateMarkGate
from relay.state_marks import EPOCH_MODEL, InMemoryStateMarks, MarkConflict, StateMark
from webhook.events import EventKind, RegistryEvent
from webhook.rules import parse_rules

RULES = parse_rules("""
rules:
  - {name: champion-deploy, pipeline_id: 13, when: {event: model_version_alias.created, alias: champion}}
  - {name: production, pipeline_id: 15, when: {to_stage: Production}}
  - {name: staging, pipeline_id: 12, when: {to_stage: Staging, from_stage: [None, Archived]}}
  - {name: tagged, pipeline_id: 21, when: {event: model_version_tag.set, tag: {key: deploy}}}
""")


class Starter:
    def __init__(self):
        self.started, self.down = [], False

    def start(self, request, *, deadline):
        if self.down:
            raise DevOpsUnavailable("HTTP 503", retry_after=1)
        self.started.append(request)
        return PipelineRun(request.rule, request.pipeline_id, 100 + len(self.started), None)

    def find_started(self, request, *, since, deadline):
        return None


class Registry:
    spec = RegistrySpec("mlflow", "http://mlflow.test")

    def __init__(self, **aliases: str):
        self.aliases, self.reads = dict(aliases), 0

    def states(self, models):
        self.reads += 1
        if not models.matches("fraud"):
            return []
        return [ObservedState("mlflow", "fraud", v, alias=a) for a, v in self.aliases.items()]


class Env(dict):
    description = "the test environment"


class World:
    def __init__(self):
        self.starter, self.marks = Starter(), InMemoryStateMarks()
        self.ledger = InMemoryLedger(LedgerTiming(lease=30.0))
        self.store = InMemoryDeliveryLogStore()
        self.log = BackgroundDeliveryLog(self.store, retention=86400.0)
        secrets = RelaySecrets(
            Env(WEBHOOK_SECRET="s", DEVOPS_PAT="p"),
            webhook_name="WEBHOOK_SECRET",
            previous_name=None,
            pat_name="DEVOPS_PAT",
            ttl=300,
        )
        self.service = RelayService(
            secrets=secrets,
            rules=lambda: RULES,
            starter=self.starter,
            ledger=self.ledger,
            default_project="MLOps",
            max_age=600,
            deadline=5,
            delivery_log=self.log,
            state_gate=StateMarkGate(self.marks, self.ledger),
        )
        self.catch_up = CatchUp(
            service=self.service, ledger=self.ledger, marks=self.marks, log=self.log, ledger_retention=7 * 86400
        )

    def versions_started(self):
        return [r.version for r in self.starter.started]

    def deliver(self, version: str, *, delivery_id: str, at: float):
        event = RegistryEvent(
            source="mlflow",
            event="model_version_alias.created",
            kind=EventKind.ALIAS_SET,
            model_name="fraud",
            version=version,
            alias="champion",
            delivery_id=delivery_id,
            event_time=datetime.fromtimestamp(at, tz=UTC),
        )
        return self.service.dispatch(self.service.route(event), event=event)


@pytest.fixture
def world():
    return World()


class TestCatchUp:
    def test_the_first_look_records_a_baseline_and_starts_nothing(self, world):
        report = world.catch_up.run(Registry(champion="3"))
        assert [(a.rule, a.action) for a in report.actions] == [("champion-deploy", "baseline")]
        assert world.starter.started == []
        assert world.catch_up.run(Registry(champion="3")).started == []

    def test_a_move_after_the_baseline_is_started_once(self, world):
        world.catch_up.run(Registry(champion="3"))
        report = world.catch_up.run(Registry(champion="4"))
        assert [(a.action, a.outcome) for a in report.started] == [("start", "triggered")]
        assert world.versions_started() == ["4"]
        assert world.catch_up.run(Registry(champion="4")).started == [], "never the last one dispatched again"
        assert world.versions_started() == ["4"]

    def test_a_move_missed_after_a_delivery_is_started_with_a_catch_up_id(self, world):
        world.deliver("1", delivery_id="mlflow-1", at=time.time() - 60)
        report = world.catch_up.run(Registry(champion="2"))
        [started] = report.started
        assert started.delivery_id.startswith("catch-up-") and world.versions_started() == ["1", "2"]
        assert world.starter.started[-1].template_parameters["delivery_id"] == started.delivery_id
        assert world.log.flush(timeout=10)
        record = world.store.get(started.delivery_id)
        assert record is not None and (record.origin, record.status) == ("catch-up", "triggered")

    def test_a_late_delivery_of_the_caught_up_state_is_a_duplicate(self, world):
        world.deliver("1", delivery_id="mlflow-1", at=time.time() - 600)
        world.catch_up.run(Registry(champion="2"))
        [late] = world.deliver("2", delivery_id="mlflow-2-late", at=time.time() - 300)
        assert late.status == "duplicate" and late.run is not None and "catch-up" in late.detail
        assert world.versions_started() == ["1", "2"]
        assert world.ledger.get("mlflow-2-late:champion-deploy") is None, "no claim for a state catch-up handled"

    def test_a_re_set_after_catch_up_looked_deploys_again(self, world):
        world.deliver("1", delivery_id="mlflow-1", at=time.time() - 600)
        world.catch_up.run(Registry(champion="2"))
        time.sleep(0.01)  # the re-set happens after catch-up looked
        [again] = world.deliver("2", delivery_id="mlflow-2-reset", at=time.time())
        assert again.status == "triggered" and world.versions_started() == ["1", "2", "2"]
        [action] = world.catch_up.run(Registry(champion="2")).actions
        assert action.action == "nothing" and "mlflow-2-reset is started" in action.reason

    def test_back_to_an_earlier_version_gets_a_new_catch_up_id(self, world):
        world.catch_up.run(Registry(champion="7"))
        first = world.catch_up.run(Registry(champion="8")).started[0].delivery_id
        time.sleep(0.01)
        world.deliver("7", delivery_id="mlflow-7-again", at=time.time())
        time.sleep(0.01)
        second = world.catch_up.run(Registry(champion="8")).started[0].delivery_id
        assert first != second and world.versions_started() == ["8", "7", "8"]

    def test_a_released_delivery_is_dispatched_again_under_its_own_id(self, world):
        world.starter.down = True
        [answer] = world.deliver("5", delivery_id="mlflow-5", at=time.time() - 60)  # no retry queue: released
        assert answer.status == "unavailable"
        world.starter.down = False
        [action] = world.catch_up.run(Registry(champion="5")).actions
        assert (action.action, action.outcome, action.delivery_id) == ("redispatch", "triggered", "mlflow-5")
        entry = world.ledger.get("mlflow-5:champion-deploy")
        assert entry is not None and entry.state is EntryState.STARTED

    def test_a_dry_run_writes_and_starts_nothing(self, world):
        world.catch_up.run(Registry(champion="3"))
        report = world.catch_up.run(Registry(champion="4"), dry_run=True)
        assert [a.action for a in report.started] == ["start"] and world.starter.started == []
        assert world.marks.get("fraud", "alias:champion").marks["champion-deploy"].version == "3"

    def test_a_delivery_that_arrived_while_catch_up_looked_wins(self, world):
        world.catch_up.run(Registry(champion="3"))
        world.marks.put(
            world.marks.get("fraud", "alias:champion").with_marks(
                {"champion-deploy": StateMark("5", time.time() + 60, "mlflow-5", "webhook", time.time())}
            )
        )
        [action] = world.catch_up.run(Registry(champion="4")).actions
        assert action.action == "nothing" and world.starter.started == []

    def test_an_unreachable_registry_is_a_failed_report_not_an_exception(self, world, caplog):
        from relay.registries import RegistryUnavailable

        class Down(Registry):
            def states(self, models):
                raise RegistryUnavailable("mlflow registry http://mlflow.test unreachable (ConnectError)")

        report = world.catch_up.run(Down())
        assert report.failed and "unreachable" in report.error
        assert any("decision=catch_up_failed" in r.getMessage() for r in caplog.records)

    def test_epoch_marks_that_keep_changing_are_a_failed_report_not_an_exception(self, world, caplog):
        class EpochContended(InMemoryStateMarks):
            def put(self, state):
                if state.model == EPOCH_MODEL:
                    raise MarkConflict("changed")
                return super().put(state)

        world.catch_up = CatchUp(
            service=world.service, ledger=world.ledger, marks=EpochContended(), log=world.log, ledger_retention=86400
        )
        report = world.catch_up.run(Registry(champion="3"))
        assert report.failed and "kept changing" in report.error
        assert any("decision=catch_up_failed" in r.getMessage() for r in caplog.records)


class TestRulesAndIds:
    def test_rules_that_can_match_decide_which_models_are_read(self):
        assert models_for(RULES, "mlflow") == ModelFilter(any=True)
        named = parse_rules("rules:\n  - {name: a, pipeline_id: 1, when: {alias: champion, model: [fraud, 'wine-*']}}")
        assert models_for(named, "mlflow") == ModelFilter(frozenset({"fraud"}), ("wine-*",))
        tags_only = parse_rules("rules:\n  - {name: t, pipeline_id: 1, when: {tag: {key: deploy}}}")
        assert models_for(tags_only, "mlflow").empty and models_for(tags_only, "databricks").empty

    def test_a_from_stage_rule_is_reported_as_never_caught_up(self, world):
        class Stages(Registry):
            spec = RegistrySpec("databricks", "https://adb-1.azuredatabricks.net")

            def states(self, models):
                return [
                    ObservedState("databricks", "fraud", "3", stage="Staging"),
                    ObservedState("databricks", "fraud", "2", stage="Production"),
                ]

        world.catch_up.run(Stages())
        report = world.catch_up.run(Stages())
        assert ("staging", "skipped") in {(a.rule, a.action) for a in report.actions}
        assert ("production", "nothing") in {(a.rule, a.action) for a in report.actions}

    def test_the_catch_up_id_depends_on_the_marks_it_replaces(self):
        state = ObservedState("mlflow", "fraud", "4", alias="champion")
        one = catch_up_delivery_id(state, {"deploy": StateMark("3", 1.0, "mlflow-3", "webhook")})
        assert one == catch_up_delivery_id(state, {"deploy": StateMark("3", 9.0, "mlflow-3", "webhook")})
        assert one != catch_up_delivery_id(state, {"deploy": StateMark("3", 1.0, "catch-up-x", "catch-up")})

"""``mlflow-relay deliveries list|show|replay`` against Azurite and the DevOps stand-in.

The relay's registered functions write the log; the commands read it (and replay) with the
environment an operator would have, exactly once unless ``--force`` says otherwise.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.composition import current_relay
from relay_tools.cli import main
from standins.devops import Fault, no_faults
from standins.harness import RelayHarness, mlflow_delivery
from tests.azurite_fixtures import azurite, harness

__all__ = ["azurite", "harness"]
pytestmark = pytest.mark.azurite

REFUSED = Fault("status", 400)


@pytest.fixture
def operator(
    harness: Callable[..., RelayHarness], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., RelayHarness]:
    """Opens the relay on Azurite (with extra settings), for an operator ``alice`` with no Azure
    CLI on the PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-az"))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.delenv("RELAY_OPERATOR", raising=False)

    def open_relay(**settings: str) -> RelayHarness:
        settings = {"DELIVERY_LOG_TABLE": "log" + uuid.uuid4().hex[:16], **settings}
        return harness(settings=settings, deadline=0.5, run_host=False)

    return open_relay


@pytest.fixture
def relay(operator: Callable[..., RelayHarness]) -> RelayHarness:
    return operator()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code in (0, 1), f"mlflow-relay {' '.join(argv)} exited {code}: {captured.err}"
    return code, json.loads(captured.out) if "--json" in argv else captured.out


def flushed() -> None:
    parts = current_relay().log
    assert parts is not None and parts.log.flush(timeout=20)


def runs_for(relay: RelayHarness, delivery_id: str) -> list[int]:
    return sorted(r.pipeline_id for r in relay.standin.runs if r.template_parameters["delivery_id"] == delivery_id)


class TestListAndShow:
    """The JSON is a list of objects with the ids, the status, the detail and the runs per rule."""

    def test_list_json_shows_each_delivery_with_its_runs(self, relay: RelayHarness, capsys: Any) -> None:
        first, other = mlflow_delivery(version=1), mlflow_delivery(version=2)
        relay.post(first)
        relay.set_faults(lambda _: REFUSED)
        relay.post(other)
        flushed()
        code, listed = run(capsys, "deliveries", "list", "--json")
        assert code == 0
        by_id = {item["delivery_id"]: item for item in listed}
        assert set(by_id) == {first.delivery_id, other.delivery_id}
        item = by_id[first.delivery_id]
        assert {k: item[k] for k in ("status", "model", "version")} == {
            "status": "triggered",
            "model": "fraud-detector",
            "version": "1",
        }
        started = {r.pipeline_id: r.run_id for r in relay.standin.runs}
        assert sorted((r["rule"], r["run_id"]) for r in item["runs"]) == [
            ("champion-audit", started[14]),
            ("champion-deploy", started[13]),
        ]
        assert by_id[other.delivery_id]["status"] == "refused" and "rejected" in by_id[other.delivery_id]["detail"]

    def test_list_filters_by_status_and_model(self, relay: RelayHarness, capsys: Any) -> None:
        relay.post(mlflow_delivery(version=1))
        relay.set_faults(lambda _: REFUSED)
        failed = mlflow_delivery(version=2)
        relay.post(failed)
        flushed()
        _, only_failed = run(capsys, "deliveries", "list", "--status", "failed", "--json")
        assert [i["delivery_id"] for i in only_failed] == [failed.delivery_id]
        _, other_model = run(capsys, "deliveries", "list", "--model", "wine-*", "--json")
        assert other_model == []

    def test_show_prints_the_rules_and_the_stored_event(self, relay: RelayHarness, capsys: Any) -> None:
        delivery = mlflow_delivery(version=3)
        relay.post(delivery)
        flushed()
        code, text = run(capsys, "deliveries", "show", delivery.delivery_id)
        assert code == 0
        assert f"delivery {delivery.delivery_id}: triggered" in text
        assert "rule champion-deploy: triggered, run " in text and "alias: champion" in text
        code, [shown] = run(capsys, "deliveries", "show", delivery.delivery_id, "--json")
        assert shown["event_kept"]["alias"] == "champion" and shown["replayable"] is True

    def test_an_unknown_id_is_one_line_and_exit_1(self, relay: RelayHarness, capsys: Any) -> None:
        assert main(["deliveries", "show", "never-seen"]) == 1
        assert "no delivery 'never-seen'" in capsys.readouterr().err


class TestReplay:
    """Routed again under today's rules through the relay's own dispatch: exactly once."""

    def test_replay_of_started_runs_answers_duplicate_and_starts_nothing(
        self, relay: RelayHarness, capsys: Any
    ) -> None:
        delivery = mlflow_delivery(version=1)
        relay.post(delivery)
        flushed()
        code, [answer] = run(capsys, "deliveries", "replay", delivery.delivery_id, "--json")
        assert (code, answer["status"]) == (0, "duplicate")
        assert runs_for(relay, delivery.delivery_id) == [13, 14]
        assert len(relay.standin.api_requests) == 2, "a replay of started runs must not call Azure DevOps"

    def test_replay_past_the_ledgers_retention_still_starts_nothing(
        self, operator: Callable[..., RelayHarness], capsys: Any
    ) -> None:
        # The ledger forgets after 1.7 s; the delivery log keeps the record a week.
        forgetful = operator(IDEMPOTENCY_RETENTION_DAYS="0.00002", DELIVERY_LOG_RETENTION_DAYS="7")
        delivery = mlflow_delivery(version=1)
        forgetful.post(delivery)
        flushed()
        time.sleep(2)
        code, [answer] = run(capsys, "deliveries", "replay", delivery.delivery_id, "--json")
        assert (code, answer["status"]) == (0, "duplicate")
        assert runs_for(forgetful, delivery.delivery_id) == [13, 14]

    def test_force_starts_a_new_run_under_a_derived_id_recorded_as_forced(
        self, relay: RelayHarness, capsys: Any
    ) -> None:
        delivery = mlflow_delivery(version=1)
        relay.post(delivery)
        flushed()
        code, [answer] = run(
            capsys, "deliveries", "replay", delivery.delivery_id, "--force", "--rule", "champion-deploy", "--json"
        )
        replay_id = f"{delivery.delivery_id}~replay-1"
        assert (code, answer["status"], answer["delivery_id"], answer["forced_by"]) == (
            0,
            "triggered",
            replay_id,
            "alice",
        )
        assert runs_for(relay, replay_id) == [13]
        _, [again] = run(capsys, "deliveries", "replay", delivery.delivery_id, "--force", "--json")
        assert again["delivery_id"] == f"{delivery.delivery_id}~replay-2"
        _, [shown] = run(capsys, "deliveries", "show", replay_id, "--json")
        assert (shown["origin"], shown["forced_by"], shown["replay_of"]) == ("replay", "alice", delivery.delivery_id)
        assert [(r["rule"], r["forced_by"]) for r in shown["runs"]] == [("champion-deploy", "alice")]

    def test_replay_of_a_refused_run_reopens_it_and_starts_it_once(self, relay: RelayHarness, capsys: Any) -> None:
        delivery = mlflow_delivery(version=4)
        relay.set_faults(lambda _: REFUSED)
        assert relay.post(delivery).status == 424
        assert relay.post(delivery).status == 424  # a repeat is refused again, without a call
        relay.set_faults(no_faults)
        flushed()
        code, [answer] = run(capsys, "deliveries", "replay", delivery.delivery_id, "--by", "bob", "--json")
        assert (code, answer["status"], sorted(answer["reopened"])) == (
            0,
            "triggered",
            ["champion-audit", "champion-deploy"],
        )
        assert runs_for(relay, delivery.delivery_id) == [13, 14]
        entry = current_relay().ledger.get(f"{delivery.delivery_id}:champion-deploy")
        assert entry is not None and entry.forced_by == "bob"
        code, [twice] = run(capsys, "deliveries", "replay", delivery.delivery_id, "--json")
        assert twice["status"] == "duplicate" and runs_for(relay, delivery.delivery_id) == [13, 14]
        _, [shown] = run(capsys, "deliveries", "show", delivery.delivery_id, "--json")
        assert (shown["status"], shown["replayed_by"]) == ("triggered", "alice")

    def test_a_rule_that_matches_nothing_today_is_a_clear_error(self, relay: RelayHarness, capsys: Any) -> None:
        delivery = mlflow_delivery(version=1)
        relay.post(delivery)
        flushed()
        assert main(["deliveries", "replay", delivery.delivery_id, "--rule", "production"]) == 2
        assert "does not match this event under today's rules" in capsys.readouterr().err

"""``mlflow-relay retries list|redrive`` against Azurite: the poison queue, back to the retry queue.

Runs are poisoned for real (``RETRY_MAX_ATTEMPTS=1`` while the DevOps stand-in is down, or a
refusal during a retry), redriven by the command, and started by the registered queue function.
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
from relay.ports import EntryState
from relay_tools.cli import main
from standins.devops import Fault, no_faults
from standins.harness import Delivery, RelayHarness, mlflow_delivery
from tests.azurite_fixtures import azurite, harness

__all__ = ["azurite", "harness"]
pytestmark = pytest.mark.azurite

ALWAYS_503 = Fault("status", 503)
REFUSED = Fault("status", 400)


@pytest.fixture
def relay(harness: Callable[..., RelayHarness], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RelayHarness:
    monkeypatch.setenv("PATH", str(tmp_path / "no-az"))
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("RELAY_OPERATOR", raising=False)
    return harness(
        settings={"DELIVERY_LOG_TABLE": "log" + uuid.uuid4().hex[:16]}, deadline=0.5, max_attempts=1, run_host=False
    )


def poisoned(relay: RelayHarness, *, retry_fault: Fault) -> Delivery:
    """A delivery queued while DevOps is down, whose one retry meets ``retry_fault``."""
    delivery = mlflow_delivery(version=int(time.time()) % 1000)
    relay.set_faults(lambda _: ALWAYS_503)
    assert relay.post(delivery).status == 202
    relay.set_faults(lambda _: retry_fault)
    time.sleep(1.2)  # the tickets' delay, capped at 1 s by the harness
    assert relay.deliver_queue() == 2
    relay.set_faults(no_faults)
    return delivery


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code in (0, 1), f"mlflow-relay {' '.join(argv)} exited {code}: {captured.err}"
    return code, json.loads(captured.out) if "--json" in argv else captured.out


def test_list_shows_what_was_not_deployed_and_why(relay: RelayHarness, capsys: Any) -> None:
    delivery = poisoned(relay, retry_fault=ALWAYS_503)
    code, listed = run(capsys, "retries", "list", "--json")
    assert code == 0
    assert sorted(m["rule"] for m in listed) == ["champion-audit", "champion-deploy"]
    for message in listed:
        assert message["key"] == f"{delivery.delivery_id}:{message['rule']}"
        assert (message["delivery_id"], message["model"], message["version"]) == (
            delivery.delivery_id,
            "fraud-detector",
            json.loads(delivery.body)["data"]["version"],
        )
        assert message["attempt"] == 1 and "HTTP 503" in message["last_error"]
        assert "still unavailable after 1 attempts" in message["reason"] and message["ledger"] == "poisoned"


def test_redrive_of_one_delivery_starts_its_runs_once(relay: RelayHarness, capsys: Any) -> None:
    delivery = poisoned(relay, retry_fault=ALWAYS_503)
    other = poisoned(relay, retry_fault=ALWAYS_503)
    code, text = run(capsys, "retries", "redrive", delivery.delivery_id)
    assert code == 0 and text.count("re-enqueued on relay-retry (was poisoned) by carol") == 2
    assert relay.deliver_queue() == 2
    started = sorted(r.pipeline_id for r in relay.standin.runs)
    assert started == [13, 14] and {r.template_parameters["delivery_id"] for r in relay.standin.runs} == {
        delivery.delivery_id
    }
    _, remaining = run(capsys, "retries", "list", "--json")
    assert {m["delivery_id"] for m in remaining} == {other.delivery_id}, "only the named delivery is redriven"

    parts = current_relay().log
    assert parts is not None and parts.log.flush(timeout=20)
    record = parts.store.get(delivery.delivery_id)
    assert record is not None and record.status == "triggered"
    assert {(r.origin, r.forced_by) for r in record.rules} == {("retry", "carol")}
    code, again = run(capsys, "retries", "redrive", delivery.delivery_id)
    assert code == 1 and "nothing in relay-retry-poison matches" in again


def test_redrive_of_a_refused_run_reopens_it_in_the_ledger(relay: RelayHarness, capsys: Any) -> None:
    delivery = poisoned(relay, retry_fault=REFUSED)
    ledger = current_relay().ledger
    key = f"{delivery.delivery_id}:champion-deploy"
    entry = ledger.get(key)
    assert entry is not None and entry.state is EntryState.REFUSED
    code, _ = run(capsys, "retries", "redrive", "--all", "--by", "dave")
    assert code == 0
    reopened = ledger.get(key)
    assert reopened is not None and (reopened.state, reopened.forced_by) == (EntryState.RELEASED, "dave")
    assert relay.deliver_queue() == 2
    assert sorted(r.pipeline_id for r in relay.standin.runs) == [13, 14]
    _, remaining = run(capsys, "retries", "list", "--json")
    assert remaining == []


def test_redrive_without_a_name_is_refused_with_a_reason(relay: RelayHarness, capsys: Any) -> None:
    assert main(["retries", "redrive"]) == 2
    assert "name a delivery id" in capsys.readouterr().err

"""One structured log line per decision, with the correlation ids; never a secret or a body; every
value from an unauthenticated request quoted, and no line broken by it.

Drives the registered functions (HTTP, and the queue trigger under the host stand-in) through
every decision and checks every log record the relay emitted.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable

import pytest

from relay.decisions import quoted
from standins.devops import Fault, no_faults
from standins.harness import DEVOPS_PAT, WEBHOOK_SECRET, Delivery, RelayHarness, databricks_delivery, mlflow_delivery

pytestmark = pytest.mark.azurite

BODY_CANARY = "BODY-CANARY-4b1d9e"
RULE_FIELDS = ("delivery_id=", "model=", "version=", "rule=")
CRAFTED_IDS = [
    "d-1\nrelay decision=triggered run_id=1",
    "d-2 run_id=666 status=200 rule=champion-deploy",
    "d-3\r\nERROR relay decision=poisoned",
    "d-4\x00\x1b[31mred",
    "ünïcödé-5",
    "d-6" + "=" * 300,
]


def test_decision_lines_carry_the_ids_and_never_a_secret_or_body(harness: Callable[..., RelayHarness]) -> None:
    relay = harness(deadline=0.5)
    triggered = databricks_delivery(version=5, text=BODY_CANARY)
    queued = mlflow_delivery(version=6)

    assert relay.post(triggered).body["status"] == "triggered"
    assert relay.post(triggered).body["status"] == "duplicate"
    relay.standin.faults = lambda _: Fault("status", 503)
    assert relay.post(queued).body["status"] == "queued"
    relay.standin.faults = no_faults
    relay.drain()
    relay.standin.declared_parameters[16] = frozenset({"model_name"})  # production-audit refuses
    refused = databricks_delivery(version=7, text=BODY_CANARY)
    assert relay.post(refused).status == 424

    logs = relay.logs
    for decision in ("received", "verified", "matched", "triggered", "duplicate", "queued", "refused"):
        assert logs.decisions(decision), f"no '{decision}' decision line"
    for record in logs.decisions("verified") + logs.decisions("matched"):
        message = record.getMessage()
        assert all(f in message for f in ("delivery_id=", "model=fraud-detector", "version=")), message
    for decision in ("triggered", "duplicate", "queued", "refused"):
        for record in logs.decisions(decision):
            message = record.getMessage()
            assert all(f in message for f in RULE_FIELDS), message
            assert record.relay_delivery_id and record.relay_rule and record.relay_model == "fraud-detector"
    for record in logs.decisions("triggered") + logs.decisions("duplicate"):
        assert "run_id=" in record.getMessage() and isinstance(record.relay_run_id, int)
    worker_runs = [r for r in logs.decisions("triggered") if r.relay_delivery_id == queued.delivery_id]
    assert {r.relay_rule for r in worker_runs} == {"champion-deploy", "champion-audit"}
    [refusal] = logs.decisions("refused", level=logging.ERROR)
    assert refusal.relay_rule == "production-audit"

    forbidden = [
        WEBHOOK_SECRET,
        DEVOPS_PAT,
        base64.b64encode(f":{DEVOPS_PAT}".encode()).decode(),
        BODY_CANARY,
        triggered.headers["X-Databricks-Signature"],
        queued.headers["X-MLflow-Signature"],
        queued.body.decode(),
        triggered.body.decode(),
    ]
    for record in logs.records:
        text = " ".join([record.getMessage(), record.exc_text or "", repr(vars(record))])
        leaked = [f for f in forbidden if f in text]
        assert not leaked, f"{record.name}: {record.getMessage()!r} leaks {leaked}"


def _with_id(delivery: Delivery, delivery_id: str) -> Delivery:
    return Delivery(
        delivery_id, delivery.version, delivery.body, {**delivery.headers, "X-MLflow-Delivery-Id": delivery_id}
    )


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_crafted_delivery_ids_are_quoted_and_break_no_line(harness: Callable[..., RelayHarness], signed: bool) -> None:
    relay = harness()
    for number, crafted in enumerate(CRAFTED_IDS):
        delivery = (
            mlflow_delivery(version=number, delivery_id=crafted)
            if signed
            else _with_id(mlflow_delivery(version=number), crafted)
        )
        assert relay.post(delivery).status == (200 if signed else 401)
    messages = [r.getMessage() for r in relay.logs.records if r.name.startswith("relay")]
    assert messages
    for message in messages:
        assert not re.search(r"[\r\n\x00\x1b]", message), repr(message)
    seen_ids = set()
    for message in messages:
        fields = fields_of(message)
        assert fields.get("run_id") not in ("1", "666"), f"forged field in {message!r}"
        seen_ids.add(fields.get("delivery_id"))
    assert {quoted(c) for c in CRAFTED_IDS} <= seen_ids, seen_ids
    assert all(quoted(c).startswith("'") for c in CRAFTED_IDS if c != "ünïcödé-5")


# key=value where value is a plain token or a Python-quoted string (which may hold "=" and spaces).
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


def fields_of(message: str) -> dict[str, str]:
    """The fields a log search would read from ``message`` (the last value wins)."""
    return {m[1]: m[2] for m in _FIELD.finditer(message)}

"""One structured log line per decision, with the correlation ids; never a secret or a body.

Drives the registered functions through every decision (triggered, duplicate, queued, the
queue worker's triggered, failed) and checks every log record the relay emitted.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import pytest

from standins.devops import Fault, no_faults
from standins.harness import (
    DEVOPS_PAT,
    WEBHOOK_SECRET,
    RelayHarness,
    databricks_delivery,
    mlflow_delivery,
)

pytestmark = pytest.mark.azurite

BODY_CANARY = "BODY-CANARY-4b1d9e"
RULE_FIELDS = ("delivery_id=", "model=", "version=", "rule=")


def _decisions(caplog: pytest.LogCaptureFixture, decision: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "relay_decision", None) == decision]


def test_decision_lines_carry_the_ids_and_never_a_secret_or_body(
    harness: Callable[..., RelayHarness], caplog: pytest.LogCaptureFixture
) -> None:
    relay = harness(deadline=0.3)
    caplog.set_level(logging.DEBUG)
    triggered = databricks_delivery(version=5, text=BODY_CANARY)
    queued = mlflow_delivery(version=6)

    assert relay.post(triggered).body["status"] == "triggered"
    assert relay.post(triggered).body["status"] == "duplicate"
    relay.set_faults(lambda _: Fault("status", 503))
    assert relay.post(queued).body["status"] == "queued"
    relay.set_faults(no_faults)
    relay.deliver_queue()
    relay.standin.declared_parameters[16] = frozenset({"model_name"})  # production-audit refuses
    failed = databricks_delivery(version=7, text=BODY_CANARY)
    assert relay.post(failed).status == 502

    for decision in ("received", "verified", "matched", "triggered", "duplicate", "queued", "failed"):
        assert _decisions(caplog, decision), f"no '{decision}' decision line"
    for record in _decisions(caplog, "verified") + _decisions(caplog, "matched"):
        message = record.getMessage()
        assert all(f in message for f in ("delivery_id=", "model=fraud-detector", "version=")), message
    for decision in ("triggered", "duplicate", "queued", "failed"):
        for record in _decisions(caplog, decision):
            message = record.getMessage()
            assert all(f in message for f in RULE_FIELDS), message
            assert record.relay_delivery_id and record.relay_rule and record.relay_model == "fraud-detector"
    for record in _decisions(caplog, "triggered") + _decisions(caplog, "duplicate"):
        assert "run_id=" in record.getMessage() and isinstance(record.relay_run_id, int)
    worker_runs = [r for r in _decisions(caplog, "triggered") if r.relay_delivery_id == queued.delivery_id]
    assert {r.relay_rule for r in worker_runs} == {"champion-deploy", "champion-audit"}
    [refused] = _decisions(caplog, "failed")
    assert refused.relay_rule == "production-audit" and refused.levelno == logging.ERROR
    received = [r for r in _decisions(caplog, "received")
                if getattr(r, "relay_delivery_id", None) == queued.delivery_id]  # fmt: skip
    assert received, "the MLflow delivery id is logged on receipt, before parsing"

    forbidden = [WEBHOOK_SECRET, DEVOPS_PAT, base64.b64encode(f":{DEVOPS_PAT}".encode()).decode(), BODY_CANARY,
                 triggered.headers["X-Databricks-Signature"], queued.headers["X-MLflow-Signature"],
                 queued.body.decode(), triggered.body.decode()]  # fmt: skip
    for record in caplog.records:
        text = " ".join([record.getMessage(), record.exc_text or "", repr(vars(record))])
        leaked = [f for f in forbidden if f in text]
        assert not leaked, f"{record.name}: {record.getMessage()!r} leaks {leaked}"

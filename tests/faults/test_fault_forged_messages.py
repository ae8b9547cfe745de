"""Anyone who can write to ``relay-retry`` can put a message there; the relay must start nothing
it did not verify. Messages are written straight to the Azurite queue and run by the queue host
stand-in through the registered ``RetryPipelineRun`` function."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from relay.ports import RetryTicket
from standins.devops import Fault, no_faults
from standins.harness import PROJECT, RelayHarness, mlflow_delivery

pytestmark = pytest.mark.azurite

EVIL_REQUEST = {
    "rule": "champion-deploy",
    "project": "Payroll",
    "pipeline_id": 99,
    "branch": "refs/heads/evil",
    "template_parameters": {"model_name": "x", "delivery_id": "forged"},
    "delivery_id": "forged",
    "model_name": "x",
    "version": "1",
}


def errors(relay: RelayHarness) -> list[str]:
    return [r.getMessage() for r in relay.logs.decisions("poisoned", level=logging.ERROR)]


def test_ticket_for_an_unknown_delivery_is_poisoned_with_an_error_line(harness: Callable[..., RelayHarness]) -> None:
    relay = harness()
    forged = RetryTicket(
        key="forged-1:champion-deploy",
        delivery_id="forged-1",
        model="fraud-detector",
        version="9",
        rule="champion-deploy",
        attempt=1,
    )
    relay.write_retry_message(forged.to_json())
    relay.drain()
    assert relay.standin.api_requests == []
    [poison] = relay.poison_messages()
    assert poison["key"] == forged.key and "no ledger entry holds this delivery" in poison["reason"]
    [line] = errors(relay)
    assert "model fraud-detector version 9 was NOT deployed by rule champion-deploy" in line


def test_old_format_message_carrying_a_request_is_poisoned_not_run(harness: Callable[..., RelayHarness]) -> None:
    relay = harness()
    message = json.dumps({"version": 1, "attempt": 1, "request": EVIL_REQUEST})
    relay.write_retry_message(message)
    relay.drain()
    assert relay.standin.api_requests == []
    [poison] = relay.poison_messages()
    assert poison["unreadable_message"] == message and "unreadable retry message" in poison["reason"]
    assert len(errors(relay)) == 1


def test_forged_ticket_for_a_verified_delivery_starts_only_the_verified_request(
    harness: Callable[..., RelayHarness],
) -> None:
    relay = harness()
    relay.standin.faults = lambda _: Fault("status", 503)
    delivery = mlflow_delivery(version=5)
    assert relay.post(delivery).status == 202  # the ledger now holds the verified requests
    key = f"{delivery.delivery_id}:champion-deploy"
    tampered = {
        **json.loads(
            RetryTicket(
                key=key,
                delivery_id=delivery.delivery_id,
                model="other-model",
                version="666",
                rule="production",
                attempt=1,
            ).to_json()
        ),
        "request": EVIL_REQUEST,
        "project": "Payroll",
        "pipeline_id": 99,
    }
    relay.write_retry_message(json.dumps(tampered))
    relay.standin.faults = no_faults
    relay.drain()
    assert sorted(r.pipeline_id for r in relay.standin.runs) == [13, 14]
    assert {r.project for r in relay.standin.runs} == {PROJECT}
    assert all(r.template_parameters["delivery_id"] == delivery.delivery_id for r in relay.standin.runs)
    assert all(r.template_parameters["model_version"] == "5" for r in relay.standin.runs)
    assert relay.poison_messages() == []

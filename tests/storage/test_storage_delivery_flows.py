"""The delivery log as the registered functions write it, against Azurite and the DevOps stand-in.

A mix of deliveries (triggered, duplicate, ignored, queued then started from the queue,
in progress, refused, poisoned) and rejected requests goes through ``MLflowWebHookTransition``
and ``RetryPipelineRun`` exactly as in Azure; then the log must tell each one's story, count the
rejections per reason, and hold no body and no secret.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from azure.data.tables import TableServiceClient

from relay.composition import current_relay
from relay.delivery_records import DeliveryRecord
from standins.devops import Fault, no_faults
from standins.harness import WEBHOOK_SECRET, Delivery, RelayHarness, databricks_delivery, mlflow_delivery
from webhook.delivery import Delivery as RawDelivery
from webhook.signatures import mlflow_signed_headers

pytestmark = pytest.mark.azurite

ALWAYS_503 = Fault("status", 503)
REFUSED = Fault("status", 400)


def log_harness(harness: Callable[..., RelayHarness], **options: object) -> RelayHarness:
    table = "log" + uuid.uuid4().hex[:16]
    return harness(settings={"DELIVERY_LOG_TABLE": table}, **options)


def unrouted_delivery() -> Delivery:
    """A signed MLflow delivery no scenario rule matches (alias challenger)."""
    delivery_id = f"ignored-{uuid.uuid4()}"
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-11-28T15:29:01+00:00",
            "data": {"name": "fraud-detector", "alias": "challenger", "version": "4"},
        }
    ).encode()
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=int(time.time()), secret=WEBHOOK_SECRET)
    return Delivery(delivery_id, "4", body, headers)


def forged(delivery: Delivery, **header_changes: str) -> Delivery:
    return Delivery(delivery.delivery_id, delivery.version, delivery.body, {**delivery.headers, **header_changes})


def records(relay_harness: RelayHarness) -> dict[str, DeliveryRecord]:
    parts = current_relay().log
    assert parts is not None and parts.log.flush(timeout=20), "the delivery log did not drain"
    return {r.delivery_id: r for r in parts.store.recent(since=time.time() - 3600)}


def test_the_log_tells_each_deliverys_story(harness: Callable[..., RelayHarness]) -> None:
    relay = log_harness(harness, deadline=0.5, max_attempts=1, run_host=False)
    triggered, queued, refused, poisoned = (mlflow_delivery(version=v) for v in (1, 2, 3, 4))
    stage = databricks_delivery(version=5)
    ignored = unrouted_delivery()

    assert relay.post(triggered).body["status"] == "triggered"
    assert relay.post(triggered).body["status"] == "duplicate"  # the sender's retry
    assert relay.post(stage).body["status"] == "triggered"
    assert relay.post(ignored).body["status"] == "ignored"
    relay.set_faults(lambda _: REFUSED)
    assert relay.post(refused).status == 424
    relay.set_faults(lambda _: ALWAYS_503)
    assert relay.post(queued).status == 202
    assert relay.post(poisoned).status == 202
    # One queued delivery's tickets are tried while DevOps is still down (max_attempts=1:
    # poisoned); the other's once it is back (started from the queue).
    time.sleep(1.2)  # the tickets' delay (capped at 1 s by the harness)
    assert sorted(_drain_only(relay, poisoned.delivery_id)) == [
        f"{poisoned.delivery_id}:champion-audit",
        f"{poisoned.delivery_id}:champion-deploy",
    ]
    relay.set_faults(no_faults)
    assert relay.deliver_queue() == 2

    # In progress: another attempt holds the claim of one rule right now.
    held = mlflow_delivery(version=6)
    relay_now = current_relay()
    event = RawDelivery.from_http(held.headers, held.body).parse(now=time.time(), max_age=600)
    assert relay_now.ledger.claim(relay_now.service.route(event)[0]).won
    assert relay.post(held).body["status"] == "in_progress"

    wrong_signatures = (
        forged(triggered, **{"X-MLflow-Signature": "v1,AAAA"}),
        forged(stage, **{"X-Databricks-Signature": "00"}),
    )
    for bad in (*wrong_signatures, forged(triggered, **{"X-MLflow-Timestamp": "1000"})):
        assert relay.post(bad).status == 401
    malformed = b"{not json"
    signed = mlflow_signed_headers(malformed, delivery_id="m-1", timestamp=int(time.time()), secret=WEBHOOK_SECRET)
    assert relay.post(Delivery("m-1", "0", malformed, signed)).status == 400

    log = records(relay)
    status = {
        d.delivery_id: log[d.delivery_id].status for d in (triggered, stage, ignored, refused, queued, poisoned, held)
    }
    assert status == {
        triggered.delivery_id: "triggered",
        stage.delivery_id: "triggered",
        ignored.delivery_id: "ignored",
        refused.delivery_id: "refused",
        queued.delivery_id: "triggered",
        poisoned.delivery_id: "poisoned",
        held.delivery_id: "in_progress",
    }
    first = log[triggered.delivery_id]
    assert (first.arrivals, first.answer) == (2, "duplicate")
    assert {r.rule: r.run_id for r in first.rules} == _runs_of(relay, triggered.delivery_id)
    from_queue = log[queued.delivery_id]
    assert from_queue.answer == "queued" and {r.origin for r in from_queue.rules} == {"retry"}
    assert {r.rule: r.run_id for r in from_queue.rules} == _runs_of(relay, queued.delivery_id)
    assert "still unavailable after 1 attempts" in log[poisoned.delivery_id].current_detail
    assert "Azure DevOps rejected" in log[refused.delivery_id].current_detail
    assert log[stage.delivery_id].to_stage == "Production" and first.alias == "champion"
    assert log[ignored.delivery_id].rules == () and "no rule matches" in log[ignored.delivery_id].detail

    counts = {c.reason: c.count for c in current_relay().log.store.rejections(since=time.time() - 3600)}  # type: ignore[union-attr]
    assert counts == {"signature": 2, "stale": 1, "malformed": 1}
    assert "m-1" not in log, "a malformed body is counted, never stored"
    _holds_no_secret_and_no_body(relay)


def _drain_only(relay: RelayHarness, delivery_id: str) -> list[str]:
    """Run the queue function on ``delivery_id``'s tickets only (the others go back at once)."""
    from azure.functions import QueueMessage
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    from relay.names import RETRY_QUEUE_NAME
    from standins.harness import registered_function

    # Both policies: update_message sends the content again, and it must stay base64.
    queue = QueueClient.from_connection_string(
        relay.azurite.connection_string,
        RETRY_QUEUE_NAME,
        message_decode_policy=TextBase64DecodePolicy(),
        message_encode_policy=TextBase64EncodePolicy(),
    )
    (retry, _binding), done = registered_function("RetryPipelineRun"), []
    deadline = time.monotonic() + 30
    while len(done) < 2 and time.monotonic() < deadline:
        for message in list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30)):
            if json.loads(message.content)["delivery_id"] != delivery_id:
                queue.update_message(message, visibility_timeout=0)
                continue
            retry(QueueMessage(id=message.id, body=message.content.encode(), pop_receipt=message.pop_receipt))
            queue.delete_message(message)
            done.append(json.loads(message.content)["key"])
        time.sleep(0.1)
    assert len(done) == 2, f"only {done} of {delivery_id}'s tickets came"
    return done


def _runs_of(relay: RelayHarness, delivery_id: str) -> dict[str, int]:
    pipelines = {13: "champion-deploy", 14: "champion-audit"}
    return {
        pipelines[r.pipeline_id]: r.run_id
        for r in relay.standin.runs
        if r.template_parameters.get("delivery_id") == delivery_id
    }


def _holds_no_secret_and_no_body(relay: RelayHarness) -> None:
    table = TableServiceClient.from_connection_string(relay.azurite.connection_string).get_table_client(
        relay.settings["DELIVERY_LOG_TABLE"]
    )
    stored = json.dumps([dict(e) for e in table.list_entities()], default=str)
    for secret in (WEBHOOK_SECRET, relay.settings["DEVOPS_PAT"], "X-MLflow-Signature", "not json"):
        assert secret not in stored

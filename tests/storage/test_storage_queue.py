"""StorageQueueRetry against Azurite's Queue service, and the retry path through the
registered ``RetryPipelineRun`` queue function."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy

from relay.names import RETRY_QUEUE_NAME
from relay.storage import StorageQueueRetry, azurite_connection_string
from standins.azurite import Azurite
from standins.devops import Fault, no_faults
from standins.harness import RelayHarness, databricks_delivery, mlflow_delivery, registered_function
from webhook.routing import PipelineRunRequest

pytestmark = pytest.mark.azurite

REQUEST = PipelineRunRequest(rule="deploy", project="MLOps", pipeline_id=13, branch="refs/heads/main",
                             template_parameters={"model_name": "fraud", "model_version": "7", "delivery_id": "d-1"},
                             delivery_id="d-1", model_name="fraud", version="7")  # fmt: skip
ALWAYS_503 = Fault("status", 503)


@pytest.fixture
def retry_queue(azurite: Azurite) -> StorageQueueRetry:
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    return StorageQueueRetry(service, "retry" + uuid.uuid4().hex[:12])


def _client(azurite: Azurite, name: str, *, decode: bool = True) -> QueueClient:
    policy = TextBase64DecodePolicy() if decode else None
    return QueueClient.from_connection_string(azurite.connection_string, name, message_decode_policy=policy)


class TestStorageQueueRetry:
    """Messages are base64 JSON (the trigger's default encoding) and honour the delay."""

    def test_message_is_base64_json_the_queue_trigger_decodes(self, retry_queue: StorageQueueRetry,
                                                               azurite: Azurite) -> None:  # fmt: skip
        retry_queue.enqueue(REQUEST, attempt=3, delay=0)
        [raw] = _client(azurite, retry_queue.queue_name, decode=False).receive_messages(max_messages=1)
        document = json.loads(base64.b64decode(raw.content, validate=True))  # what host.json's base64 expects
        assert document["version"] == 1 and document["attempt"] == 3
        assert PipelineRunRequest.model_validate(document["request"]) == REQUEST

    def test_delay_keeps_the_message_invisible(self, retry_queue: StorageQueueRetry, azurite: Azurite) -> None:
        retry_queue.enqueue(REQUEST, attempt=1, delay=30)
        queue = _client(azurite, retry_queue.queue_name)
        assert queue.peek_messages(max_messages=5) == []
        assert queue.get_queue_properties().approximate_message_count == 1

    def test_short_delay_becomes_visible(self, retry_queue: StorageQueueRetry, azurite: Azurite) -> None:
        retry_queue.enqueue(REQUEST, attempt=1, delay=1)
        queue = _client(azurite, retry_queue.queue_name)
        assert queue.peek_messages() == []
        deadline = time.monotonic() + 5
        while not (visible := queue.peek_messages()) and time.monotonic() < deadline:
            time.sleep(0.2)
        [message] = visible
        assert json.loads(message.content)["request"]["delivery_id"] == "d-1"

    def test_poison_keeps_the_message_and_the_reason(self, retry_queue: StorageQueueRetry, azurite: Azurite) -> None:
        retry_queue.poison('{"attempt": 8}', reason="still unavailable after 8 attempts")
        [message] = _client(azurite, retry_queue.poison_queue_name).peek_messages()
        assert json.loads(message.content) == {"reason": "still unavailable after 8 attempts",
                                               "message": '{"attempt": 8}'}  # fmt: skip


def _entity(harness: RelayHarness, delivery_id: str, rule: str) -> dict[str, Any]:
    assert harness.storage
    tables = TableServiceClient.from_connection_string(harness.storage)
    return dict(tables.get_table_client(harness.table).get_entity(delivery_id, rule))


class TestRetryFunction:
    """HTTP 202 queued → message in Azurite → the registered queue function starts the run."""

    def test_queued_delivery_starts_one_run_once_devops_is_back(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness(deadline=0.5, visibility_cap=3)  # wide enough for the peek below on a busy machine
        relay.set_faults(lambda _: ALWAYS_503)
        delivery = mlflow_delivery()

        answer = relay.post(delivery)
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert answer.body["pending"] == ["champion-deploy", "champion-audit"]
        queue = relay.queue()
        assert queue.peek_messages(max_messages=5) == [], "the message must wait for its delay"
        assert queue.get_queue_properties().approximate_message_count == 2
        assert relay.post(delivery).body["status"] == "queued"  # a repeat meanwhile starts nothing
        assert relay.standin.runs == []

        relay.set_faults(no_faults)
        assert relay.deliver_queue() == 2
        started = {r.pipeline_id: r for r in relay.standin.runs}
        assert sorted(started) == [13, 14]
        assert all(r.template_parameters["delivery_id"] == delivery.delivery_id for r in started.values())

        repeat = relay.post(delivery)
        assert repeat.status == 200 and repeat.body["status"] == "duplicate"
        assert sorted(r["run_id"] for r in repeat.body["runs"]) == sorted(r.run_id for r in started.values())
        assert len(relay.standin.runs) == 2

    def test_a_message_delivered_twice_starts_one_run(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness(deadline=0.5)
        relay.set_faults(lambda _: ALWAYS_503)
        relay.post(databricks_delivery())
        relay.set_faults(no_faults)
        time.sleep(1.2)
        messages = list(relay.queue().peek_messages(max_messages=5))
        assert len(messages) == 2
        for message in messages * 2:  # the host may deliver a message more than once
            registered_function("RetryPipelineRun")(func.QueueMessage(body=message.content.encode()))
        assert sorted(r.pipeline_id for r in relay.standin.runs) == [15, 16]

    def test_last_attempt_goes_to_poison_with_an_error_naming_the_version(
        self, harness: Callable[..., RelayHarness], caplog: pytest.LogCaptureFixture
    ) -> None:
        relay = harness(deadline=0.3, max_attempts=2)
        relay.set_faults(lambda _: ALWAYS_503)
        delivery = mlflow_delivery(version=7)
        assert relay.post(delivery).status == 202
        with caplog.at_level(logging.INFO, logger="relay"):
            processed = relay.deliver_queue()
        assert processed == 4  # two rules, two attempts each
        poisoned = relay.poison_messages()
        assert len(poisoned) == 2
        assert all("still unavailable after 2 attempts" in p["reason"] for p in poisoned)
        assert {json.loads(p["message"])["request"]["rule"] for p in poisoned} == {"champion-deploy", "champion-audit"}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        for rule in ("champion-deploy", "champion-audit"):
            [line] = [m for m in errors if f"rule={rule}" in m]
            assert "decision=poisoned" in line and f"delivery_id={delivery.delivery_id}" in line
            assert "model=fraud-detector" in line and "version=7" in line
            assert "was NOT deployed" in line
        assert _entity(relay, delivery.delivery_id, "champion-deploy")["state"] == "failed"
        assert relay.standin.runs == []

    def test_devops_refusal_in_the_worker_is_poisoned_at_once(self, harness: Callable[..., RelayHarness],
                                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
        relay = harness(deadline=0.3, max_attempts=8)
        relay.set_faults(lambda _: ALWAYS_503)
        delivery = mlflow_delivery()
        assert relay.post(delivery).status == 202
        relay.set_faults(no_faults)
        relay.standin.declared_parameters[14] = frozenset({"model_name"})  # audit pipeline: undeclared parameters
        with caplog.at_level(logging.INFO, logger="relay"):
            assert relay.deliver_queue() == 2  # one attempt each: no requeue for a 4xx
        assert [r.pipeline_id for r in relay.standin.runs] == [13]
        [poisoned] = relay.poison_messages()
        assert "HTTP 400" in poisoned["reason"] and "Unexpected parameter" in poisoned["reason"]
        entity = _entity(relay, delivery.delivery_id, "champion-audit")
        assert entity["state"] == "failed" and "HTTP 400" in entity["detail"]
        assert _entity(relay, delivery.delivery_id, "champion-deploy")["state"] == "started"
        assert not any("decision=requeued" in r.getMessage() for r in caplog.records)

    def test_unreadable_message_is_poisoned(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        registered_function("RetryPipelineRun")(func.QueueMessage(body=b"not json"))
        [poisoned] = relay.poison_messages()
        assert poisoned["message"] == "not json" and "unreadable" in poisoned["reason"]

    def test_storage_down_answers_503_and_starts_nothing(self, harness: Callable[..., RelayHarness]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dead = azurite_connection_string(blob_port=port, queue_port=port, table_port=port)
        relay = harness(settings={"AzureWebJobsStorage": dead})
        answer = relay.post(mlflow_delivery())
        assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1
        assert relay.standin.runs == []


def test_retry_queue_name_matches_the_trigger_binding() -> None:
    import function_app
    from relay_tools.local_host import registered_functions

    [retry] = [f for f in registered_functions(function_app.app) if f.get_function_name() == "RetryPipelineRun"]
    binding = retry.get_trigger().get_dict_repr()
    assert binding["queueName"] == RETRY_QUEUE_NAME and binding["connection"] == "AzureWebJobsStorage"

"""StorageRetryQueue against Azurite's Queue service, and the retry path through the registered
``RetryPipelineRun`` function run by the queue host stand-in."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable

import pytest
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy

from relay.budgets import use_fixed_durations
from relay.names import RETRY_QUEUE_NAME
from relay.ports import RetryTicket, StorageUnavailable
from relay.retry_queue import StorageRetryQueue
from relay.settings import settings_from_env
from relay.storage_clients import azurite_connection_string, queue_service
from standins.azurite import Azurite
from standins.devops import Fault, no_faults
from standins.harness import RelayHarness, mlflow_delivery
from standins.storage_faults import StorageFaultProxy, WriteFault, queue_send
from standins.timescale import TimeScale

pytestmark = pytest.mark.azurite

TICKET = RetryTicket(
    key="d-1:deploy", delivery_id="d-1", model="fraud", version="7", rule="deploy", attempt=3, last_error="HTTP 503"
)
ALWAYS_503 = Fault("status", 503)


def _queues(connection_string: str) -> QueueServiceClient:
    settings = settings_from_env(
        {"DEVOPS_ORG_URL": "https://dev.azure.com/c", "DEVOPS_PROJECT": "p", "AzureWebJobsStorage": connection_string}
    )
    return queue_service(settings, credential_factory=lambda: None)


@pytest.fixture
def retry_queue(azurite: Azurite) -> StorageRetryQueue:
    return StorageRetryQueue(_queues(azurite.connection_string), "retry" + uuid.uuid4().hex[:12])


def _client(azurite: Azurite, name: str, *, decode: bool = True) -> QueueClient:
    policy = TextBase64DecodePolicy() if decode else None
    return QueueClient.from_connection_string(azurite.connection_string, name, message_decode_policy=policy)


class TestStorageRetryQueue:
    """Tickets are base64 JSON (the trigger's encoding): a reference, never a request."""

    def test_message_is_a_base64_ticket_without_a_request(
        self, retry_queue: StorageRetryQueue, azurite: Azurite
    ) -> None:
        retry_queue.enqueue(TICKET, delay=0)
        [raw] = _client(azurite, retry_queue.queue_name, decode=False).receive_messages(max_messages=1)
        document = json.loads(base64.b64decode(raw.content, validate=True))  # what host.json's base64 expects
        assert document == {
            "v": 2,
            "key": "d-1:deploy",
            "delivery_id": "d-1",
            "model": "fraud",
            "version": "7",
            "rule": "deploy",
            "attempt": 3,
            "last_error": "HTTP 503",
        }
        assert RetryTicket.from_json(json.dumps(document)) == TICKET

    def test_delay_keeps_the_message_invisible(self, retry_queue: StorageRetryQueue, azurite: Azurite) -> None:
        retry_queue.enqueue(TICKET, delay=30)
        queue = _client(azurite, retry_queue.queue_name)
        assert queue.peek_messages(max_messages=5) == []
        assert queue.get_queue_properties().approximate_message_count == 1

    def test_short_delay_becomes_visible(self, retry_queue: StorageRetryQueue, azurite: Azurite) -> None:
        retry_queue.enqueue(TICKET, delay=1)
        queue = _client(azurite, retry_queue.queue_name)
        assert queue.peek_messages() == []
        deadline = time.monotonic() + 5
        while not (visible := queue.peek_messages()) and time.monotonic() < deadline:
            time.sleep(0.2)
        [message] = visible
        assert json.loads(message.content)["key"] == "d-1:deploy"

    def test_poison_message_names_the_delivery_and_the_reason(
        self, retry_queue: StorageRetryQueue, azurite: Azurite
    ) -> None:
        retry_queue.poison(TICKET, reason="still unavailable after 8 attempts: HTTP 503")
        [message] = _client(azurite, retry_queue.poison_queue_name).peek_messages()
        document = json.loads(message.content)
        assert document["reason"] == "still unavailable after 8 attempts: HTTP 503"
        assert (document["delivery_id"], document["model"], document["version"], document["rule"]) == (
            "d-1",
            "fraud",
            "7",
            "deploy",
        )

    def test_unreadable_message_is_kept_bounded_with_the_reason(
        self, retry_queue: StorageRetryQueue, azurite: Azurite
    ) -> None:
        retry_queue.poison(None, reason="unreadable retry message: x" * 200, raw="y" * 5000)
        [message] = _client(azurite, retry_queue.poison_queue_name).peek_messages()
        document = json.loads(message.content)
        assert document["unreadable_message"] == "y" * 2000 and len(document["reason"]) == 1000

    def test_a_failing_send_gives_up_within_the_storage_call_budget(self, azurite: Azurite) -> None:
        """The queue SDK's own ExponentialRetry would wait 12-18 s before its retry."""
        durations = TimeScale().fixed_durations()
        previous = use_fixed_durations(durations)
        proxy = StorageFaultProxy(azurite).start()
        try:
            queue = StorageRetryQueue(_queues(proxy.connection_string), "retry" + uuid.uuid4().hex[:12])
            queue.enqueue(TICKET, delay=0)  # creates the queue
            proxy.add(WriteFault("send fails", queue_send(queue.queue_name), count=1))
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match="retry queue unavailable"):
                queue.enqueue(RetryTicket.from_json(TICKET.to_json().replace('"attempt": 3', '"attempt": 4')), delay=0)
            assert time.monotonic() - started <= durations.storage_call
            assert proxy.requests["queue"] >= 4  # create, first send, the failing send and its SDK retry
        finally:
            proxy.stop()
            use_fixed_durations(previous)


class TestRetryFunction:
    """HTTP 202 queued → a ticket in Azurite → the host runs the registered function on it."""

    def test_queued_delivery_waits_for_the_delay_then_starts_one_run(
        self,
        harness: Callable[..., RelayHarness],
    ) -> None:
        relay = harness(base_delay=2, run_host=False)
        relay.standin.faults = lambda _: ALWAYS_503
        delivery = mlflow_delivery()
        answer = relay.post(delivery)
        assert answer.status == 202 and answer.body["pending"] == ["champion-deploy", "champion-audit"]
        queue = _client(relay.azurite, RETRY_QUEUE_NAME)
        assert queue.peek_messages(max_messages=5) == [], "the ticket must wait for its delay"
        assert queue.get_queue_properties().approximate_message_count == 2
        assert relay.post(delivery).body["status"] == "queued"  # a repeat meanwhile starts nothing
        assert relay.standin.runs == []
        for rule in ("champion-deploy", "champion-audit"):
            assert relay.entity(delivery.delivery_id, rule)["state"] == "queued"

    def test_last_attempt_is_poisoned_with_an_error_naming_the_version(
        self,
        harness: Callable[..., RelayHarness],
    ) -> None:
        relay = harness(max_attempts=1)
        relay.standin.faults = lambda _: ALWAYS_503
        delivery = mlflow_delivery(version=7)
        assert relay.post(delivery).status == 202
        relay.drain()
        poisoned = relay.poison_messages()
        assert {p["rule"] for p in poisoned} == {"champion-deploy", "champion-audit"}
        assert all("still unavailable after 1 attempts" in p["reason"] and p["version"] == "7" for p in poisoned)
        errors = [r.getMessage() for r in relay.logs.decisions("poisoned", level=logging.ERROR)]
        for rule in ("champion-deploy", "champion-audit"):
            [line] = [m for m in errors if f"rule={rule}" in m]
            assert f"delivery_id={delivery.delivery_id}" in line and "model=fraud-detector" in line
            assert f"version 7 was NOT deployed by rule {rule}" in line
            assert relay.entity(delivery.delivery_id, rule)["state"] == "poisoned"
        assert relay.standin.runs == []

    def test_devops_refusal_in_the_worker_is_recorded_and_poisoned_at_once(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness()
        relay.standin.faults = lambda _: ALWAYS_503
        delivery = mlflow_delivery()
        assert relay.post(delivery).status == 202
        relay.standin.declared_parameters[14] = frozenset({"model_name"})  # audit pipeline: undeclared parameters
        relay.standin.faults = no_faults
        relay.drain()
        assert [r.pipeline_id for r in relay.standin.runs] == [13]
        [poisoned] = relay.poison_messages()
        assert "HTTP 400" in poisoned["reason"] and "Unexpected parameter" in poisoned["reason"]
        entity = relay.entity(delivery.delivery_id, "champion-audit")
        assert entity["state"] == "refused" and "HTTP 400" in entity["detail"]
        assert relay.entity(delivery.delivery_id, "champion-deploy")["state"] == "started"
        assert not relay.logs.decisions("requeued")

    def test_storage_down_answers_503_and_starts_nothing(self, harness: Callable[..., RelayHarness]) -> None:
        port = _unused_port()
        dead = azurite_connection_string(blob_port=port, queue_port=port, table_port=port)
        relay = harness(settings={"AzureWebJobsStorage": dead}, run_host=False)
        answer = relay.post(mlflow_delivery())
        assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1
        assert relay.standin.api_requests == []


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_retry_queue_name_matches_the_trigger_binding() -> None:
    from standins.functions_queue import registered_function

    _, binding = registered_function("RetryPipelineRun")
    assert binding["queueName"] == RETRY_QUEUE_NAME and binding["connection"] == "AzureWebJobsStorage"

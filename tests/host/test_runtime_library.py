"""The app through Microsoft's ``azure-functions-runtime``, as the Python 3.13 worker runs it in Azure.

The runtime library indexes ``function_app.py`` itself and answers the host's messages, in a worker
process of its own (``standins/functions_worker.py``; ``functions_host.py`` plays the host and
the worker's transport). These tests check what the host is told (triggers, routes, methods, auth
level, queue and connection) and that both functions answer correctly through the library's own
dispatch: the HTTP body reaches the relay byte for byte, the answer comes back as the host's
``RpcHttp``, and a failing queue invocation is reported as a failure (so the host retries it and
finally moves it to the poison queue). Azure DevOps is the TLS loopback stand-in, storage Azurite.

The library is pinned in ``requirements.txt`` for Python 3.13 and later only; on 3.11 and 3.12
the worker's bundled runtime runs the app, and this module skips.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

runtime = pytest.importorskip(
    "azure_functions_runtime",
    reason="azure-functions-runtime is not installed: requirements.txt pins it for Python 3.13+ only",
)

from relay.names import RETRY_QUEUE_NAME  # noqa: E402
from standins.azurite import Azurite  # noqa: E402
from standins.devops import Fault, no_faults  # noqa: E402
from standins.functions_worker import WorkerProcess  # noqa: E402
from standins.harness import RelayHarness, databricks_delivery, mlflow_delivery  # noqa: E402
from standins.timescale import TimeScale  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK = "MLflowWebHookTransition"
RETRY = "RetryPipelineRun"
CATCH_UP = "CatchUpMissedEvents"


def pinned(distribution: str) -> str:
    """The version requirements.txt pins for this interpreter (markers evaluated as pip does)."""
    from packaging.requirements import Requirement

    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            if requirement.name == distribution and (requirement.marker is None or requirement.marker.evaluate()):
                return str(requirement.specifier).removeprefix("==")
    raise AssertionError(f"requirements.txt pins no {distribution} for this Python")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayHarness]:
    """The relay's settings (no storage) and the DevOps stand-in, in this process's environment."""
    # Real time (factor 1): the worker runs in a process of its own, with the relay's own durations.
    with RelayHarness(None, tmp_path_factory.mktemp("relay"), scale=TimeScale(1.0)) as harness:
        yield harness


@pytest.fixture(scope="module")
def worker(relay: RelayHarness) -> Iterator[WorkerProcess]:
    """A worker started as on Flex Consumption: a placeholder, then specialised with the settings."""
    with WorkerProcess(REPO_ROOT, os.environ) as process:
        yield process


def runs_of(relay: RelayHarness, delivery_id: str) -> list[int]:
    return sorted(r.pipeline_id for r in relay.standin.runs if r.template_parameters["delivery_id"] == delivery_id)


class TestPinnedRuntime:
    def test_the_library_and_sdk_are_the_pinned_versions(self) -> None:
        assert importlib.metadata.version("azure-functions-runtime") == pinned("azure-functions-runtime")
        assert importlib.metadata.version("azure-functions") == pinned("azure-functions")


class TestIndexing:
    """What the runtime reports to the host, read from the raw binding JSON the host registers."""

    def test_every_function_is_indexed(self, worker: WorkerProcess) -> None:
        assert sorted(worker.functions) == sorted([WEBHOOK, RETRY, CATCH_UP])

    def test_catch_up_is_a_timer_on_its_schedule_setting(self, worker: WorkerProcess) -> None:
        trigger = worker.functions[CATCH_UP].trigger()
        assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "%CATCH_UP_SCHEDULE%"

    def test_webhook_is_an_anonymous_trigger_on_its_route_for_every_method(self, worker: WorkerProcess) -> None:
        function = worker.functions[WEBHOOK]
        trigger = function.trigger()
        assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
        assert trigger["route"] == WEBHOOK
        assert trigger["authLevel"] == "ANONYMOUS"
        assert sorted(trigger["methods"]) == ["DELETE", "GET", "PATCH", "POST", "PUT"]
        [answer] = [b for b in function.bindings if b["name"] == "$return"]
        assert answer["type"] == "http" and answer["direction"] == "OUT"
        assert function.directions == {trigger["name"]: 0, "$return": 1}  # BindingInfo.Direction in, out

    def test_retry_reads_the_provisioned_queue_on_the_host_storage(self, worker: WorkerProcess) -> None:
        trigger = worker.functions[RETRY].trigger()
        assert trigger["type"] == "queueTrigger"
        assert trigger["queueName"] == RETRY_QUEUE_NAME
        assert trigger["connection"] == "AzureWebJobsStorage"  # infra sets only AzureWebJobsStorage__*
        provisioned = re.search(r"var retryQueueName = '([^']+)'", (REPO_ROOT / "infra/resources.bicep").read_text())
        assert provisioned and provisioned.group(1) == trigger["queueName"]
        assert [b["name"] for b in worker.functions[RETRY].bindings] == [trigger["name"]]  # no output binding


class TestWebhookThroughTheRuntime:
    """HTTP invocations: the host's RpcHttp in, the relay's answer back as RpcHttp."""

    def test_signed_delivery_starts_one_run_per_rule(self, worker: WorkerProcess, relay: RelayHarness) -> None:
        delivery = mlflow_delivery()
        answer = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["status"] == "triggered"
        assert runs_of(relay, delivery.delivery_id) == [13, 14]

    def test_repeat_answers_duplicate(self, worker: WorkerProcess, relay: RelayHarness) -> None:
        delivery = databricks_delivery()
        first = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        again = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        assert (first.json()["status"], again.json()["status"]) == ("triggered", "duplicate")
        assert runs_of(relay, delivery.delivery_id) == [15, 16]

    def test_forged_signature_answers_401_and_starts_nothing(self, worker: WorkerProcess, relay: RelayHarness) -> None:
        delivery = mlflow_delivery(secret="forged")
        answer = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        assert answer.status == 401 and answer.json()["error"] == "AuthenticationFailed"
        assert runs_of(relay, delivery.delivery_id) == []

    def test_a_byte_changed_in_transit_is_refused(self, worker: WorkerProcess, relay: RelayHarness) -> None:
        delivery = mlflow_delivery()
        answer = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body + b" ")
        assert answer.status == 401
        assert runs_of(relay, delivery.delivery_id) == []

    def test_get_answers_405_with_allow_post(self, worker: WorkerProcess) -> None:
        answer = worker.http(WEBHOOK, method="GET", headers={}, body=b"")
        assert answer.status == 405 and answer.headers["Allow"] == "POST"

    def test_devops_outage_answers_503_with_retry_after(self, worker: WorkerProcess, relay: RelayHarness) -> None:
        relay.set_faults(lambda _: Fault("status", 503))
        try:
            delivery = mlflow_delivery()
            answer = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        finally:
            relay.set_faults(no_faults)
        assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1

    def test_retry_without_storage_fails_the_invocation_so_the_host_retries(self, worker: WorkerProcess) -> None:
        outcome = worker.queue(RETRY, text='{"attempt": 1}')
        assert not outcome.succeeded
        assert "AzureWebJobsStorage" in outcome.error


class TestDedicatedStart:
    """A worker whose process environment is the app's (Premium, Dedicated, Core Tools)."""

    def test_indexes_the_same_functions_and_answers_a_missing_setting_with_an_error_id(
        self, worker: WorkerProcess, relay: RelayHarness
    ) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "DEVOPS_PROJECT"}
        with WorkerProcess(REPO_ROOT, environment, specialized=False) as dedicated:
            assert {n: f.bindings for n, f in dedicated.functions.items()} == {
                n: f.bindings for n, f in worker.functions.items()
            }
            delivery = mlflow_delivery()
            answer = dedicated.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
        body = answer.json()
        assert answer.status == 500 and body["error"] == "ConfigurationError" and body["error_id"]
        assert "DEVOPS_PROJECT" not in answer.body.decode()  # the log line names it, not the answer
        assert b"Traceback" not in answer.body


@pytest.mark.azurite
class TestRetryThroughTheRuntime:
    """RetryPipelineRun invoked with the messages the relay itself put on Azurite's queue."""

    def test_queued_delivery_is_started_by_the_queue_function(self, azurite: Azurite, tmp_path: Path) -> None:
        with (
            RelayHarness(azurite, tmp_path, deadline=0.5, run_host=False, scale=TimeScale(1.0)) as relay,
            WorkerProcess(REPO_ROOT, os.environ) as worker,
        ):
            relay.set_faults(lambda _: Fault("status", 503))
            delivery = mlflow_delivery()
            answer = worker.http(WEBHOOK, method="POST", headers=delivery.headers, body=delivery.body)
            assert answer.status == 202 and answer.json()["status"] == "queued"
            relay.set_faults(no_faults)

            messages = received(relay, want=2)  # one per matching rule
            for message in messages:
                outcome = worker.queue(RETRY, text=message.content, dequeue_count=message.dequeue_count)
                assert outcome.succeeded, outcome.error
                assert outcome.return_value is None
            assert runs_of(relay, delivery.delivery_id) == [13, 14]

            again = worker.queue(RETRY, text=messages[0].content, dequeue_count=2)  # the host redelivers
            assert again.succeeded and runs_of(relay, delivery.delivery_id) == [13, 14]


def received(relay: RelayHarness, *, want: int, timeout: float = 15.0) -> list[Any]:
    """Receive ``want`` retry messages as the queue extension does (base64 decoded to text)."""
    queue, found, deadline = relay.retry_queue(), [], time.monotonic() + timeout
    while len(found) < want and time.monotonic() < deadline:
        found += list(queue.receive_messages(messages_per_page=32, visibility_timeout=60))
        time.sleep(0.1)
    assert len(found) == want, f"expected {want} retry messages, found {len(found)}"
    return found

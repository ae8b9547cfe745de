"""A queue driver that behaves like the Azure Functions queue extension, on real Azurite queues.

It runs the *registered* ``RetryPipelineRun`` function of ``function_app.app`` the way the
host's queue listener does (Microsoft.Azure.WebJobs.Extensions.Storage.Queues, QueueListener and
QueueProcessor), with the settings of a host.json:

* polls the trigger's queue (its binding's ``queueName``), ``batchSize`` messages at a time,
  fetching again when no more than ``newBatchThreshold`` are in flight; an empty queue is polled
  with a growing interval up to ``maxPollingInterval``;
* dequeues a message invisible for the host's 10 minutes (renewed at half that while the
  function runs), decodes it (``messageEncoding: base64``) and calls the function with an
  ``azure.functions.QueueMessage`` carrying the id, pop receipt and ``dequeue_count``;
* the function returns → the message is deleted; it raises → the message is visible again after
  ``visibilityTimeout``, or, once ``dequeue_count`` reached ``maxDequeueCount``, its original text
  is copied to ``<queue>-poison`` and it is deleted; a message dequeued more often than that
  (a host died meanwhile) goes to the poison queue without a call;
* a body the host cannot decode fails the invocation without calling the function.

One behaviour of a real deployment is chosen on purpose: with ``lose_result`` > 0 the driver
runs the function and then, at that rate (at most once per message), does *not* delete the
message (the instance died after the function returned), so it is delivered again; it then
reappears after ``visibilityTimeout``, the shortest the host allows, which is the harshest
timing for the relay.
Several ``instances`` poll the same queue, as a scaled-out app does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionsQueueMessage
from azure.storage.queue import QueueClient, QueueMessage

from standins.timescale import CompressedHost

HOST_DEQUEUE_VISIBILITY_SECONDS = 600.0  # the listener's own invisibility while a function runs
MIN_POLLING_SECONDS = 0.1
HOST_USER_AGENT = "functions-queue-standin"


def registered_function(name: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The user function of ``function_app.app`` registered as ``name``, and its trigger binding."""
    import function_app
    from relay_tools.local_host import registered_functions

    for function in registered_functions(function_app.app):
        if function.get_function_name() == name:
            return function.get_user_function(), function.get_trigger().get_dict_repr()
    raise LookupError(f"function_app registers no function named {name}")


@dataclass
class HostStats:
    """What the driver did: invocations and their outcomes, and where messages went."""

    invocations: int = 0
    succeeded: int = 0
    failed: int = 0
    undecodable: int = 0
    results_lost: int = 0
    poisoned_by_host: int = 0
    storage_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    dequeue_counts: Counter[int] = field(default_factory=Counter)  # of the invocations


class FunctionsQueueHost:
    """Drives ``RetryPipelineRun`` from its queue until stopped; see the module docstring."""

    def __init__(
        self,
        connection_string: str,
        host: CompressedHost,
        *,
        function_name: str = "RetryPipelineRun",
        instances: int = 1,
        lose_result: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._function, binding = registered_function(function_name)
        self.queue_name = str(binding["queueName"])
        self.poison_queue_name = f"{self.queue_name}-poison"
        self._host = host
        queues = host.queues
        self.visibility_timeout = queues.visibility_timeout
        self.max_dequeue_count = queues.max_dequeue_count
        self.batch_size = int(host.queue_option("batchSize", 16))
        self.new_batch_threshold = int(host.queue_option("newBatchThreshold", self.batch_size // 2))
        self.max_polling = host.queue_option("maxPollingInterval", 60.0)
        self.dequeue_visibility = max(1, round(host.scale.seconds(HOST_DEQUEUE_VISIBILITY_SECONDS)))
        self._connection_string = connection_string
        self._instances = instances
        self._lose_result = lose_result
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._lost: set[str] = set()
        self.stats = HostStats()

    def _client(self, name: str) -> QueueClient:
        # No encode/decode policy: the host reads and copies the stored text itself.
        return QueueClient.from_connection_string(self._connection_string, name, user_agent=HOST_USER_AGENT)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FunctionsQueueHost:
        for client in (self._client(self.queue_name), self._client(self.poison_queue_name)):
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
        for number in range(self._instances):
            thread = threading.Thread(target=self._listen, name=f"functions-host-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> FunctionsQueueHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def pending(self) -> int:
        """Messages in the queue, visible or not (Azure's approximate count, exact on Azurite)."""
        return int(self._client(self.queue_name).get_queue_properties().approximate_message_count)

    def wait_idle(self, timeout: float) -> bool:
        """Until the queue holds no message and no function runs; False when ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_flight == 0 and self.pending() == 0:  # a received message still counts as pending
                return True
            time.sleep(0.1)
        return False

    # -- the listener --------------------------------------------------------------------------
    def _listen(self) -> None:
        queue = self._client(self.queue_name)
        wait = MIN_POLLING_SECONDS
        with ThreadPoolExecutor(max_workers=self.batch_size + self.new_batch_threshold) as pool:
            running: set[Future[None]] = set()
            while not self._stop.is_set():
                running = {f for f in running if not f.done()}
                if len(running) > self.new_batch_threshold:
                    time.sleep(0.02)
                    continue
                try:
                    batch = list(
                        queue.receive_messages(
                            messages_per_page=self.batch_size,
                            max_messages=self.batch_size,
                            visibility_timeout=self.dequeue_visibility,
                        )
                    )
                except AzureError as exc:
                    self._count_storage_error("receive", exc)
                    batch = []
                if not batch:
                    self._stop.wait(wait)
                    wait = min(self.max_polling, wait * 2)
                    continue
                wait = MIN_POLLING_SECONDS
                for message in batch:
                    with self._lock:
                        self._in_flight += 1
                    running.add(pool.submit(self._process, queue, message))

    def _process(self, queue: QueueClient, message: QueueMessage) -> None:
        try:
            if message.dequeue_count is not None and message.dequeue_count > self.max_dequeue_count:
                self._to_poison(queue, message)  # BeginProcessingMessageAsync: dequeued too often
                return
            succeeded = self._invoke(queue, message)
            self._complete(queue, message, succeeded=succeeded)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _invoke(self, queue: QueueClient, message: QueueMessage) -> bool:
        try:
            body = base64.b64decode(message.content or "", validate=True)
        except (binascii.Error, ValueError):
            with self._lock:
                self.stats.undecodable += 1
            return False
        renewal = _VisibilityRenewal(queue, message, self.dequeue_visibility)
        with self._lock:
            self.stats.invocations += 1
            self.stats.dequeue_counts[message.dequeue_count or 0] += 1
        try:
            self._function(
                FunctionsQueueMessage(
                    id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=renewal.pop_receipt
                )
            )
        except Exception as exc:  # the host records any exception as a failed invocation
            with self._lock:
                self.stats.failed += 1
                self.stats.errors[type(exc).__name__] += 1
            return False
        finally:
            renewal.stop()
            message.pop_receipt = renewal.pop_receipt
        with self._lock:
            self.stats.succeeded += 1
        return True

    def _complete(self, queue: QueueClient, message: QueueMessage, *, succeeded: bool) -> None:
        """CompleteProcessingMessageAsync: delete, release after visibilityTimeout, or poison."""
        try:
            if succeeded:
                with self._lock:  # at most once per message, so every message ends
                    lose = message.id not in self._lost and self._rng.random() < self._lose_result
                    if lose:
                        self._lost.add(message.id)
                        self.stats.results_lost += 1
                if lose:  # the instance died after the function returned: delivered again
                    queue.update_message(message, visibility_timeout=int(self.visibility_timeout))
                else:
                    queue.delete_message(message)
            elif (message.dequeue_count or 0) >= self.max_dequeue_count:
                self._to_poison(queue, message)
            else:
                queue.update_message(message, visibility_timeout=int(self.visibility_timeout))
        except ResourceNotFoundError:
            pass  # the message or its pop receipt is gone: someone else completed it
        except AzureError as exc:
            self._count_storage_error("complete", exc)  # it reappears when its invisibility ends

    def _to_poison(self, queue: QueueClient, message: QueueMessage) -> None:
        """Copy the original text to ``<queue>-poison``, then delete it (HandlePoisonMessageAsync)."""
        poison = self._client(self.poison_queue_name)
        try:
            poison.send_message(message.content, time_to_live=-1)
            queue.delete_message(message)
        except AzureError as exc:
            self._count_storage_error("poison", exc)
            return
        with self._lock:
            self.stats.poisoned_by_host += 1

    def _count_storage_error(self, step: str, exc: Exception) -> None:
        with self._lock:
            self.stats.storage_errors += 1
            self.stats.errors[f"{step}: {type(exc).__name__}"] += 1


class _VisibilityRenewal:
    """Keeps a message invisible while its function runs (the listener's renewal timer)."""

    def __init__(self, queue: QueueClient, message: QueueMessage, visibility: int) -> None:
        self._queue = queue
        self._message = message
        self._visibility = visibility
        self.pop_receipt = message.pop_receipt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="functions-host-renewal")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._visibility / 2):
            try:
                self._message.pop_receipt = self.pop_receipt
                updated = self._queue.update_message(self._message, visibility_timeout=self._visibility)
                self.pop_receipt = updated.pop_receipt
            except AzureError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

"""The relay as deployed, on loopback: registered functions, real Azurite, faults where Azure has them.

``RelayHarness`` builds the relay from the process environment exactly as in Azure and drives
the *registered* functions of ``function_app.app``: the HTTP webhook (called like the host
calls it, or served over HTTP) and the ``RetryPipelineRun`` queue trigger, run by a stand-in
of the Functions queue extension (``standins.functions_queue``) on the real Azurite queue. The
relay's storage goes through a fault-injecting proxy (``standins.storage_faults``), Azure DevOps
is the TLS stand-in (``standins.devops``), and time is compressed as ``standins.timescale``
states. Senders behave like MLflow: they re-send on 429/5xx, honouring Retry-After.

The relay is built in this process (``current_relay``), so the harness changes process-wide
state while it is entered: the relay's settings in ``os.environ``, ``AzureWebJobsScriptRoot``,
the fixed durations in force, and a handler on the ``relay`` logger; all are restored on exit.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.functions.queue import QueueMessage as FunctionsQueueMessage
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
from relay.composition import current_relay, reset_relay
from relay.names import RETRY_QUEUE_NAME
from relay.settings import SETTING_NAMES
from relay_tools.local_host import LocalFunctionsHost
from standins.azurite import Azurite
from standins.devops import DevOpsStandIn, FaultPlan
from standins.functions_queue import FunctionsQueueHost, registered_function
from standins.storage_faults import StorageFaultProxy
from standins.timescale import CompressedHost, TimeScale, compressed_time
from webhook.signatures import mlflow_signed_headers, sign_databricks

WEBHOOK_SECRET = "whsec-fault-suite-3b8e61d0c2a94f57"
DEVOPS_PAT = "standin-pat"
PROJECT = "MLOps"
MODEL = "fraud-detector"
# Two rules per format, so "one run per matching rule" is checked on a fan-out.
SCENARIO_RULES = """\
rules:
  - name: champion-deploy
    pipeline_id: 13
    when: {event: model_version_alias.created, alias: champion}
  - name: champion-audit
    pipeline_id: 14
    when: {event: model_version_alias.created, alias: champion}
  - name: production
    pipeline_id: 15
    when: {to_stage: Production}
  - name: production-audit
    pipeline_id: 16
    when: {to_stage: Production}
"""
RULES = {13: "champion-deploy", 14: "champion-audit", 15: "production", 16: "production-audit"}
WEBHOOK_PATH = "/api/MLflowWebHookTransition"
SENDER_RETRIED = frozenset({429, 500, 502, 503, 504})  # MLflow's status_forcelist


@dataclass(frozen=True)
class Delivery:
    """One signed delivery, re-sendable byte for byte (as MLflow and Databricks re-send)."""

    delivery_id: str  # MLflow's header id, or the id the relay derives for Databricks
    version: str
    body: bytes
    headers: dict[str, str]

    @property
    def pipelines(self) -> tuple[int, ...]:
        return (15, 16) if "X-Databricks-Signature" in self.headers else (13, 14)

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(delivery id, pipeline id) of every run this delivery must start once."""
        return [(self.delivery_id, p) for p in self.pipelines]


def mlflow_delivery(*, version: int = 1, delivery_id: str | None = None, secret: str = WEBHOOK_SECRET) -> Delivery:
    """An MLflow ``model_version_alias.created`` (champion) delivery, signed now."""
    delivery_id = delivery_id or f"fault-{uuid.uuid4()}"
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-11-28T15:29:01.109946+00:00",
            "data": {"name": MODEL, "alias": "champion", "version": str(version)},
        }
    ).encode()
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=int(time.time()), secret=secret)
    return Delivery(delivery_id, str(version), body, headers)


def databricks_delivery(*, version: int = 1, secret: str = WEBHOOK_SECRET, text: str = "promoted") -> Delivery:
    """A Databricks transition-to-Production delivery; its id is derived from the body."""
    from webhook.events import parse_databricks_event

    body = json.dumps(
        {
            "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
            "webhook_id": "5c0b7d1e2a3f4b6c",
            "event_timestamp": int(time.time() * 1000) + version,
            "model_name": MODEL,
            "version": str(version),
            "to_stage": "Production",
            "from_stage": "Staging",
            "text": text,
        }
    ).encode()
    headers = {"Content-Type": "application/json", "X-Databricks-Signature": sign_databricks(body, secret=secret)}
    return Delivery(parse_databricks_event(body).delivery_id, str(version), body, headers)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.status} {self.body.get('status', '?')}"


class LogCapture(logging.Handler):
    """Every record the relay logs while the harness runs (thread-safe)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)

    def decisions(self, decision: str, *, level: int = logging.DEBUG) -> list[logging.LogRecord]:
        with self._guard:
            return [r for r in self.records if getattr(r, "relay_decision", None) == decision and r.levelno >= level]


class RelayHarness:
    """The relay wired, through the process environment, to Azurite (via the fault proxy), the
    DevOps stand-in and the queue driver, on the compressed clock of ``scale``.

    Use as a context manager: it restores the environment and stops everything afterwards.
    """

    def __init__(
        self,
        azurite: Azurite | None,
        workdir: Path,
        *,
        scale: TimeScale | None = None,
        deadline: float = 1.0,
        max_attempts: int = 3,
        base_delay: float = 1.0,
        settings: dict[str, str] | None = None,
        host_instances: int = 1,
        lose_result: float = 0.0,
        seed: int = 0,
        run_host: bool = True,
    ) -> None:
        self.azurite = azurite
        self.workdir = workdir
        self.scale = scale or TimeScale()
        self.table = "relay" + uuid.uuid4().hex[:20]
        self.standin = DevOpsStandIn(workdir / "devops", pat=DEVOPS_PAT)
        # Without Azurite (``azurite=None``): the relay runs with no storage, as in local development.
        self.storage = (
            StorageFaultProxy(azurite, retry_window=self.scale.fixed_durations().storage_call + 1) if azurite else None
        )
        self.logs = LogCapture()
        self._host_options = {"instances": host_instances, "lose_result": lose_result, "seed": seed}
        self._run_host = run_host
        rules = workdir / "fault-routes.yaml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(SCENARIO_RULES, encoding="utf-8")
        self.settings = {
            "DEVOPS_PROJECT": PROJECT,
            "DEVOPS_DEADLINE_SECONDS": str(deadline),
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "DEVOPS_AUTH": "pat",
            "DEVOPS_PAT": DEVOPS_PAT,
            "ROUTES_FILE": str(rules),
            "IDEMPOTENCY_TABLE": self.table,
            "RETRY_MAX_ATTEMPTS": str(max_attempts),
            "RETRY_BASE_DELAY_SECONDS": str(base_delay),
            **(settings or {}),
        }
        self._stack = ExitStack()
        self.host: FunctionsQueueHost | None = None
        self.clock: CompressedHost | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> RelayHarness:
        stack = self._stack
        self.standin.start()
        stack.callback(self.standin.stop)
        storage = {}
        if self.storage is not None:
            self.storage.start()
            stack.callback(self.storage.stop)
            storage = {"AzureWebJobsStorage": self.storage.connection_string}
        self.clock = stack.enter_context(compressed_time(self.scale, self.workdir))
        stack.enter_context(
            _environment(
                {
                    "DEVOPS_ORG_URL": self.standin.org_url,
                    "DEVOPS_CA_BUNDLE": str(self.standin.tls.ca_file),
                    **storage,
                    **self.settings,
                }
            )
        )
        relay_log = logging.getLogger("relay")
        relay_log.addHandler(self.logs)
        stack.callback(relay_log.removeHandler, self.logs)
        saved_level = relay_log.level
        relay_log.setLevel(logging.INFO)
        stack.callback(relay_log.setLevel, saved_level)
        if self.azurite is None:
            return self
        for name in (RETRY_QUEUE_NAME, f"{RETRY_QUEUE_NAME}-poison"):
            with suppress(ResourceNotFoundError):
                self._azurite_queue(name).clear_messages()
        if self._run_host:
            self.host = FunctionsQueueHost(self.azurite.connection_string, self.clock, **self._host_options)
            self.host.start()
            stack.callback(self.host.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- what the relay derived --------------------------------------------------------------
    @property
    def lease(self) -> float:
        return current_relay().ledger.lease

    @property
    def visibility_timeout(self) -> float:
        assert self.clock is not None
        return self.clock.queues.visibility_timeout

    def set_faults(self, plan: FaultPlan) -> None:
        """What the Azure DevOps stand-in does with each POST from now on."""
        self.standin.faults = plan

    # -- senders -----------------------------------------------------------------------------
    def post(self, delivery: Delivery) -> Answer:
        """Call the registered HTTP function as the Functions host would."""
        request = func.HttpRequest(
            method="POST",
            url=f"http://localhost:7071{WEBHOOK_PATH}",
            headers=dict(delivery.headers),
            params={},
            route_params={},
            body=delivery.body,
        )
        started = time.monotonic()
        response = registered_function("MLflowWebHookTransition")[0](request)
        return Answer(
            response.status_code,
            json.loads(response.get_body()),
            dict(response.headers.items()),
            time.monotonic() - started,
        )

    def send(
        self,
        delivery: Delivery,
        *,
        tries: int = 10,
        post: Callable[[Delivery], Answer] | None = None,
    ) -> list[Answer]:
        """Send like MLflow: re-send on 429/5xx after Retry-After (at most the visibility timeout).

        MLflow gives up after 3 retries; these senders try ``tries`` times, because a 503 with
        Retry-After is the relay saying "retry", and the property is about the relay, not about
        a sender's patience. A sender left with a 5xx is counted (``Figures.sender_gave_up``).
        """
        post = post or self.post
        answers = [post(delivery)]
        while answers[-1].status in SENDER_RETRIED and len(answers) < tries:
            wait = float(answers[-1].headers.get("Retry-After") or 1)
            time.sleep(min(wait, self.visibility_timeout))
            answers.append(post(delivery))
        return answers

    @contextmanager
    def http_host(self) -> Iterator[Callable[[Delivery], Answer]]:
        """Serve the registered HTTP functions on a loopback port; yields a ``post`` over HTTP."""
        server = LocalFunctionsHost(function_app.app, port=0)
        server.start_in_thread()
        client = httpx.Client(timeout=60)

        def post(delivery: Delivery) -> Answer:
            started = time.monotonic()
            response = client.post(server.base_url + WEBHOOK_PATH, content=delivery.body, headers=delivery.headers)
            return Answer(response.status_code, response.json(), dict(response.headers), time.monotonic() - started)

        try:
            yield post
        finally:
            client.close()
            server.shutdown()
            server.server_close()

    # -- what storage holds ------------------------------------------------------------------
    def retry_queue(self) -> QueueClient:
        """The retry queue as the queue extension reads it (base64 decoded to text)."""
        assert self.azurite is not None, "no storage configured"
        return QueueClient.from_connection_string(
            self.azurite.connection_string, RETRY_QUEUE_NAME, message_decode_policy=TextBase64DecodePolicy()
        )

    def _azurite_queue(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.azurite.connection_string, name)

    def deliver_queue(self, *, timeout: float = 60.0) -> int:
        """Without the host stand-in (``run_host=False``): run the registered retry function once on
        every visible retry message, deleting each after it returns. Returns how many ran.

        A deterministic driver for tests of the operator commands, which need to say exactly when
        a retry happens; the fault suite uses the host stand-in instead.
        """
        assert self.host is None, "the host stand-in is delivering the queue already"
        queue, (retry, _binding) = self._azurite_queue(RETRY_QUEUE_NAME), registered_function("RetryPipelineRun")
        processed, deadline = 0, time.monotonic() + timeout
        while True:
            try:
                messages = list(queue.receive_messages(messages_per_page=32, visibility_timeout=120))
            except ResourceNotFoundError:
                return processed  # never created: nothing was ever queued
            if not messages:
                if queue.get_queue_properties().approximate_message_count == 0:
                    return processed
                if time.monotonic() > deadline:
                    raise TimeoutError(f"retry queue not drained after {timeout:.0f} s ({processed} processed)")
                time.sleep(0.1)
                continue
            for message in messages:
                body = base64.b64decode(message.content)
                retry(
                    FunctionsQueueMessage(
                        id=message.id, body=body, pop_receipt=message.pop_receipt, dequeue_count=message.dequeue_count
                    )
                )
                queue.delete_message(message)
                processed += 1

    def write_retry_message(self, text: str, *, encode: bool = True) -> None:
        """Put a message on the retry queue as anyone with access to it could."""
        content = base64.b64encode(text.encode()).decode() if encode else text
        queue = self._azurite_queue(RETRY_QUEUE_NAME)
        with suppress(Exception):
            queue.create_queue()
        queue.send_message(content)

    def poison_messages(self) -> list[dict[str, Any]]:
        """The poison queue's messages, decoded (``{"undecodable": text}`` when not base64 JSON)."""
        try:
            peeked = self._azurite_queue(f"{RETRY_QUEUE_NAME}-poison").peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
        found = []
        for message in peeked:
            try:
                found.append(json.loads(base64.b64decode(message.content, validate=True)))
            except ValueError:
                found.append({"undecodable": message.content})
        return found

    def entity(self, delivery_id: str, rule: str) -> dict[str, Any]:
        """The ledger entity of (delivery id, rule), read from Azurite directly."""
        tables = TableServiceClient.from_connection_string(self.azurite.connection_string)
        return dict(tables.get_table_client(self.table).get_entity(delivery_id, rule))

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until the retry queue is empty and no retry function runs. Raises ``TimeoutError``."""
        assert self.host is not None, "the queue driver is not running"
        if not self.host.wait_idle(timeout):
            raise TimeoutError(f"retry queue not drained after {timeout:.0f} s ({self.host.stats})")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly ``values`` for the relay's settings (none else), restored afterwards; relay rebuilt."""
    import relay.composition

    saved = {name: os.environ.pop(name, None) for name in SETTING_NAMES | set(values)}
    os.environ.update(values)
    relay.composition.azure_credential.cache_clear()
    reset_relay()
    try:
        yield
    finally:
        reset_relay()
        relay.composition.azure_credential.cache_clear()
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value

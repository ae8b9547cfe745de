"""The fault suite's scenarios, written once: used by ``tests/faults`` (assertions) and by
``bench/fault_suite.py`` (a table of figures anyone can print).

Each scenario drives the *registered* functions of ``function_app.app`` — the HTTP webhook and
the ``RetryPipelineRun`` queue trigger — with the relay built from the environment exactly as in
Azure, against real Azurite tables and queues and the TLS Azure DevOps stand-in, and returns
``Figures``: what was sent, how the relay answered, how many runs the stand-in started against
how many were expected, and how many were lost or duplicated.

One compression of time, stated in every figure set: the retry queue's visibility delays (30 s
to an hour in production) are capped at ``visibility_cap`` seconds by lowering
``relay.retry_queue.MAX_VISIBILITY_SECONDS``; everything else (deadlines, backoff, Retry-After) is
the relay's real policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
import relay.composition
import relay.retry_queue
from relay.composition import reset_relay
from relay.names import RETRY_QUEUE_NAME
from relay.settings import SETTING_NAMES
from relay_tools.local_host import LocalFunctionsHost, registered_functions
from standins.devops import DevOpsStandIn, Fault, FaultPlan, no_faults, random_faults
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
RULES_PER_EVENT = 2
WEBHOOK_PATH = "/api/MLflowWebHookTransition"


@dataclass(frozen=True)
class Delivery:
    """One signed delivery, re-sendable byte for byte (as MLflow and Databricks re-send)."""

    delivery_id: str  # MLflow's header id, or the id the relay derives for Databricks
    body: bytes
    headers: dict[str, str]


def mlflow_delivery(*, version: int = 1, delivery_id: str | None = None, secret: str = WEBHOOK_SECRET) -> Delivery:
    """An MLflow ``model_version_alias.created`` (champion) delivery, signed now."""
    delivery_id = delivery_id or f"fault-{uuid.uuid4()}"
    body = json.dumps({
        "entity": "model_version_alias", "action": "created",
        "timestamp": "2026-11-28T15:29:01.109946+00:00",
        "data": {"name": MODEL, "alias": "champion", "version": str(version)},
    }).encode()  # fmt: skip
    timestamp = int(time.time())
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)
    return Delivery(delivery_id, body, headers)


def databricks_delivery(*, version: int = 1, secret: str = WEBHOOK_SECRET, text: str = "promoted") -> Delivery:
    """A Databricks transition-to-Production delivery; its id is derived from the body."""
    from webhook.events import parse_databricks_event

    body = json.dumps({
        "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "webhook_id": "5c0b7d1e2a3f4b6c",
        "event_timestamp": int(time.time() * 1000) + version, "model_name": MODEL,
        "version": str(version), "to_stage": "Production", "from_stage": "Staging", "text": text,
    }).encode()  # fmt: skip
    headers = {"Content-Type": "application/json", "X-Databricks-Signature": sign_databricks(body, secret=secret)}
    return Delivery(parse_databricks_event(body).delivery_id, body, headers)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.status} {self.body.get('status', '?')}"


@dataclass
class Figures:
    """What one scenario did and what came of it."""

    scenario: str
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    runs_expected: int = 0
    runs_started: int = 0
    lost: int = 0
    duplicated: int = 0
    queue_messages: int = 0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def record(self, answer: Answer) -> Answer:
        self.sent += 1
        self.answers[answer.label] += 1
        return answer

    def count_runs(self, standin: DevOpsStandIn, expected: set[tuple[str, int]]) -> None:
        """Compare the runs the stand-in started with ``expected`` (delivery id, pipeline id)."""
        started = Counter((r.template_parameters.get("delivery_id", ""), r.pipeline_id) for r in standin.runs)
        self.runs_expected = len(expected)
        self.runs_started = sum(started.values())
        self.lost = sum(1 for key in expected if started[key] == 0)
        self.duplicated = sum(n - 1 for key, n in started.items() if n > 1)
        self.notes.extend(f"unexpected run {key}" for key in started if key not in expected)


def _pipelines_for(delivery: Delivery) -> tuple[int, ...]:
    return (15, 16) if "X-Databricks-Signature" in delivery.headers else (13, 14)


def expected_runs(deliveries: list[Delivery]) -> set[tuple[str, int]]:
    return {(d.delivery_id, p) for d in deliveries for p in _pipelines_for(d)}


def registered_function(name: str) -> Callable[..., Any]:
    for function in registered_functions(function_app.app):
        if function.get_function_name() == name:
            return function.get_user_function()  # type: ignore[no-any-return]
    raise AssertionError(f"function_app registers no function named {name}")


class RelayHarness:
    """The relay wired, through the process environment, to Azurite and a DevOps stand-in.

    Use as a context manager: it sets the relay's settings (and restores the previous
    environment afterwards), starts the stand-in, empties the retry queues and caps queue
    visibility delays at ``visibility_cap`` seconds.
    """

    def __init__(
        self, storage: str | None, workdir: Path, *, deadline: float = 2.0, max_attempts: int = 8,
        visibility_cap: int = 1, settings: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.storage = storage
        self.workdir = workdir
        self.table = "relay" + uuid.uuid4().hex[:20]
        self.visibility_cap = visibility_cap
        self.standin = DevOpsStandIn(workdir / "devops", pat=DEVOPS_PAT)
        rules = workdir / "fault-routes.yaml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(SCENARIO_RULES, encoding="utf-8")
        self.settings = {
            "DEVOPS_PROJECT": PROJECT, "DEVOPS_DEADLINE_SECONDS": str(deadline),
            "WEBHOOK_SECRET": WEBHOOK_SECRET, "DEVOPS_PAT": DEVOPS_PAT, "ROUTES_FILE": str(rules),
            "IDEMPOTENCY_TABLE": self.table, "RETRY_MAX_ATTEMPTS": str(max_attempts),
            **({"AzureWebJobsStorage": storage} if storage else {}), **(settings or {}),
        }  # fmt: skip
        self._saved_env: dict[str, str | None] = {}
        self._saved_cap = relay.retry_queue.MAX_VISIBILITY_SECONDS

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> RelayHarness:
        self.standin.start()
        values = {"DEVOPS_ORG_URL": self.standin.org_url, "DEVOPS_CA_BUNDLE": str(self.standin.tls.ca_file),
                  **self.settings}  # fmt: skip
        for name in SETTING_NAMES:
            self._saved_env[name] = os.environ.pop(name, None)
        os.environ.update(values)
        relay.retry_queue.MAX_VISIBILITY_SECONDS = self.visibility_cap
        reset_relay()
        if self.storage:
            for name in (RETRY_QUEUE_NAME, f"{RETRY_QUEUE_NAME}-poison"):
                self._clear(name)
        return self

    def __exit__(self, *exc: object) -> None:
        reset_relay()
        relay.retry_queue.MAX_VISIBILITY_SECONDS = self._saved_cap
        for name, value in self._saved_env.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        self.standin.stop()

    def set_faults(self, plan: FaultPlan) -> None:
        self.standin.faults = plan

    # -- the registered functions ------------------------------------------------------------
    def post(self, delivery: Delivery) -> Answer:
        """Call the registered HTTP function as the Functions host would."""
        request = func.HttpRequest(method="POST", url=f"http://localhost:7071{WEBHOOK_PATH}",
                                   headers=dict(delivery.headers), params={}, route_params={},
                                   body=delivery.body)  # fmt: skip
        response = registered_function("MLflowWebHookTransition")(request)
        return Answer(response.status_code, json.loads(response.get_body()), dict(response.headers.items()))

    @contextmanager
    def http_host(self) -> Iterator[str]:
        """Serve the registered HTTP functions on a loopback port; yields the base URL."""
        host = LocalFunctionsHost(function_app.app, port=0)
        host.start_in_thread()
        try:
            yield host.base_url
        finally:
            host.shutdown()
            host.server_close()

    def queue(self, name: str = RETRY_QUEUE_NAME) -> QueueClient:
        assert self.storage, "no storage configured"
        return QueueClient.from_connection_string(self.storage, name, message_decode_policy=TextBase64DecodePolicy())

    def _clear(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.queue(name).clear_messages()

    def deliver_queue(self, *, timeout: float = 60.0) -> int:
        """Run the registered queue function on every retry message until the queue is empty.

        Messages are received like the Functions host does (base64 text, decoded to bytes) and
        deleted after the function returns. Returns how many messages were processed.
        """
        queue, retry = self.queue(), registered_function("RetryPipelineRun")
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
                retry(func.QueueMessage(id=message.id, body=message.content.encode("utf-8"),
                                        pop_receipt=message.pop_receipt))  # fmt: skip
                queue.delete_message(message)
                processed += 1

    def poison_messages(self) -> list[dict[str, Any]]:
        try:
            peeked = self.queue(f"{RETRY_QUEUE_NAME}-poison").peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
        return [json.loads(m.content) for m in peeked]


def post_over_http(client: httpx.Client, base_url: str, delivery: Delivery) -> Answer:
    response = client.post(base_url + WEBHOOK_PATH, content=delivery.body, headers=delivery.headers)
    return Answer(response.status_code, response.json(), dict(response.headers))


# --- the scenarios ---------------------------------------------------------------------------


def same_delivery_repeated(harness: RelayHarness, *, concurrent: int = 10, sequential: int = 10,
                           latency: float = 0.3) -> Figures:  # fmt: skip
    """One MLflow delivery sent ``concurrent`` times at once over HTTP, then ``sequential`` more.

    DevOps answers slowly (``latency``) so the concurrent copies really overlap the first run.
    """
    figures = Figures("same delivery x20 (10 concurrent)")
    harness.standin.latency = latency
    delivery = mlflow_delivery()
    started = time.monotonic()
    with harness.http_host() as base_url, httpx.Client(timeout=30) as client:
        with ThreadPoolExecutor(max_workers=concurrent) as pool:  # all concurrent copies answered first
            answers = list(pool.map(lambda _: post_over_http(client, base_url, delivery), range(concurrent)))
        for answer in answers:
            figures.record(answer)
        for _ in range(sequential):
            figures.record(post_over_http(client, base_url, delivery))
    figures.wall_seconds = time.monotonic() - started
    figures.count_runs(harness.standin, expected_runs([delivery]))
    return figures


def random_outage(harness: RelayHarness, *, events: int = 200, rate: float = 0.3, seed: int = 7,
                  senders: int = 10, max_resends: int = 20) -> Figures:  # fmt: skip
    """``events`` distinct deliveries (half MLflow, half Databricks) while DevOps answers
    ``rate`` of its requests 503 or 429 (Retry-After: 0) at random.

    Senders behave like MLflow: a 503 is re-sent (same delivery); a 202 queued is left to the
    retry queue, which is then drained through the registered queue function.
    """
    figures = Figures(f"{events} events, {rate:.0%} 503/429")
    harness.set_faults(random_faults(rate, seed=seed, retry_after="0"))
    deliveries = [mlflow_delivery(version=i) if i % 2 else databricks_delivery(version=i) for i in range(events)]
    resends = Counter[str]()

    def send(delivery: Delivery) -> list[Answer]:
        answers = [post_over_http(client, base_url, delivery)]
        while answers[-1].status >= 500 and len(answers) <= max_resends:
            time.sleep(0.05)
            answers.append(post_over_http(client, base_url, delivery))
        return answers

    started = time.monotonic()
    with harness.http_host() as base_url, httpx.Client(timeout=60) as client, \
            ThreadPoolExecutor(max_workers=senders) as pool:  # fmt: skip
            for answers in pool.map(send, deliveries):
                for answer in answers:
                    figures.record(answer)
                resends["re-sent after 5xx"] += len(answers) - 1
    figures.queue_messages = harness.deliver_queue()
    figures.wall_seconds = time.monotonic() - started
    figures.count_runs(harness.standin, expected_runs(deliveries))
    figures.notes.append(f"DevOps requests {len(harness.standin.requests)}, "
                         f"re-sends after 5xx {resends['re-sent after 5xx']}")
    return figures


def devops_down_then_back(harness: RelayHarness) -> Figures:
    """DevOps answers 503 for the whole request deadline → 202 queued; back → one run each."""
    figures = Figures("DevOps down for the deadline")
    harness.set_faults(lambda _: Fault("status", 503))
    deliveries = [mlflow_delivery(), databricks_delivery()]
    started = time.monotonic()
    for delivery in deliveries:
        figures.record(harness.post(delivery))
    down = harness.standin
    figures.notes.append(f"DevOps requests while down {len(down.requests)}, runs {len(down.runs)}")
    harness.set_faults(no_faults)
    figures.queue_messages = harness.deliver_queue()
    for delivery in deliveries:  # the sender's repeat, after the fact
        figures.record(harness.post(delivery))
    figures.wall_seconds = time.monotonic() - started
    figures.count_runs(harness.standin, expected_runs(deliveries))
    return figures


class FakeVault:
    """A Key Vault ``SecretClient`` double: serves secrets, or fails as an unreachable vault does."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.down = False
        self.reads = 0

    def get_secret(self, name: str) -> Any:
        from azure.core.exceptions import ServiceRequestError

        self.reads += 1
        if self.down:
            raise ServiceRequestError("[Errno 111] Connection refused")
        if name not in self.secrets:
            raise ResourceNotFoundError(f"secret {name} not found")
        return SimpleNamespace(value=self.secrets[name])


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_vault_outage(harness: RelayHarness, *, ttl: float = 300.0) -> Figures:
    """Secrets read once from Key Vault (the real ``KeyVaultSecretSource`` over a vault double),
    then the vault becomes unreachable: cached secrets keep serving until ``ttl`` passes on the
    secrets' clock, then the relay answers 503 with Retry-After and starts nothing."""
    from relay.keyvault import KeyVaultSecretSource
    from relay.secrets import RelaySecrets

    figures = Figures("Key Vault unreachable (warm cache)")
    vault = FakeVault({"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT})
    clock = ManualClock()
    secrets = RelaySecrets(KeyVaultSecretSource(lambda: vault), webhook_name="mlflow-webhook-secret",
                           previous_name=None, pat_name="devops-pat", ttl=ttl, clock=clock)  # fmt: skip
    original = relay.composition.build_secrets
    relay.composition.build_secrets = lambda settings: secrets
    reset_relay()
    started = time.monotonic()
    try:
        served = [mlflow_delivery(version=i) for i in range(3)]
        figures.record(harness.post(served[0]))  # reads (and caches) the secrets
        vault.down = True
        for delivery in served[1:]:
            clock.now += ttl / 3
            figures.record(harness.post(delivery))
        clock.now += ttl  # every cached secret is now older than the TTL
        for version in range(10, 13):
            answer = figures.record(harness.post(mlflow_delivery(version=version)))
            figures.notes.append(f"after TTL: {answer.status} Retry-After={answer.headers.get('Retry-After')}")
    finally:
        relay.composition.build_secrets = original
        reset_relay()
    figures.wall_seconds = time.monotonic() - started
    figures.count_runs(harness.standin, expected_runs(served))
    figures.notes.append(f"vault reads {vault.reads} (while down: refused)")
    return figures


def format_table(rows: list[Figures]) -> str:
    """The figures as a fixed-width table (one line per scenario, then notes)."""
    header = ("scenario", "sent", "answers", "runs expected", "runs started", "lost", "duplicated",
              "queue msgs", "wall s")  # fmt: skip
    lines = [[f.scenario, str(f.sent), ", ".join(f"{k}: {v}" for k, v in sorted(f.answers.items())),
              str(f.runs_expected), str(f.runs_started), str(f.lost), str(f.duplicated), str(f.queue_messages),
              f"{f.wall_seconds:.1f}"] for f in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in [list(header), *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines)
    for f in rows:
        out.extend(f"  [{f.scenario}] {note}" for note in f.notes)
    return "\n".join(out)

"""Fixtures for end-to-end tests: real programs on loopback, nothing off the machine.

- ``mlflow_server``: a real ``mlflow server`` (the installed version, ``standins/mlflow_server.py``)
  with a sqlite registry and webhooks enabled for loopback targets; one per test module (it takes
  10-40 s to start).
  ``mlflow_client``: an ``MlflowClient`` on it that deletes the webhooks the test created.
- ``devops_standin``: the TLS Azure DevOps stand-in (``standins/devops.py``), per test.
- ``start_relay``: serves the *registered* functions of ``function_app.app`` on loopback
  (``relay_tools.local_host.LocalFunctionsHost``) with a local-development environment pointing at the
  stand-in, and records every answer the relay gives (``RelayAnswers``).
- ``wait_for``: bounded polling with a failure message that shows what was seen.

Test modules get everything through fixtures (pytest imports this file as ``conftest``; importing
it again by path would load a second copy). Its classes may be imported for type hints only.

MLflow caches the list of webhooks per event for ``MLFLOW_WEBHOOK_CACHE_TTL`` (60 s): a webhook
created after an event of the same type has fired on that server is not called for up to a
minute. Tests sharing a module's server must create their webhooks before their first event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from standins.devops import DevOpsStandIn
from standins.mlflow_server import MlflowServer, MlflowServerFailed, start_mlflow_server, stop_mlflow_server

RELAY_ROUTE = "MLflowWebHookTransition"

T = TypeVar("T")


# --- bounded waiting -------------------------------------------------------------------------


def poll_until(
    probe: Callable[[], T | None], *, timeout: float, describe: Callable[[], str], interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds.

    Args:
        describe: builds the failure message (what was expected and what was seen instead).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s: {describe()}", pytrace=False)
        time.sleep(interval)


@pytest.fixture(scope="session", name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """``poll_until``: ``wait_for(probe, timeout=..., describe=lambda: "...")``."""
    return poll_until


# --- a real MLflow tracking server -----------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` for this test module (sqlite registry, webhooks to loopback).

    Mind the webhook cache described in this module's docstring.
    """
    try:
        server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    except MlflowServerFailed as failure:
        pytest.fail(str(failure), pytrace=False)
    try:
        yield server
    finally:
        stop_mlflow_server(server)


@pytest.fixture
def mlflow_client(mlflow_server: MlflowServer) -> Iterator[Any]:
    """An ``MlflowClient`` on the module's server; webhooks created through it are deleted after the test.

    Deleted webhooks may still be called for up to ``MLFLOW_WEBHOOK_CACHE_TTL`` (module docstring).
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    before = {w.webhook_id for w in client.list_webhooks()}
    yield client
    for webhook in client.list_webhooks():
        if webhook.webhook_id not in before:
            client.delete_webhook(webhook.webhook_id)


# --- the Azure DevOps stand-in ---------------------------------------------------------------


@pytest.fixture
def devops_standin(tmp_path: Path) -> Iterator[DevOpsStandIn]:
    """A started TLS stand-in for Azure DevOps; tests may set ``declared_parameters``."""
    standin = DevOpsStandIn(workdir=tmp_path / "devops").start()
    try:
        yield standin
    finally:
        standin.stop()


# --- the relay, served with its registered functions -----------------------------------------


@dataclass(frozen=True)
class RelayAnswer:
    """One request the relay answered: what came in (headers, query) and what went out."""

    status: int
    request_headers: dict[str, str]
    query: dict[str, str]
    request_body: bytes
    body: dict[str, Any]

    @property
    def delivery_id(self) -> str | None:
        """The sender's ``X-MLflow-Delivery-Id`` header."""
        return next((v for k, v in self.request_headers.items() if k.lower() == "x-mlflow-delivery-id"), None)

    @property
    def event(self) -> str:
        """``entity.action`` of an MLflow body (``?`` when it is not one)."""
        try:
            document = json.loads(self.request_body)
            return f"{document['entity']}.{document['action']}"
        except (ValueError, KeyError, TypeError):
            return "?"

    @property
    def model_name(self) -> str | None:
        try:
            return str(json.loads(self.request_body)["data"]["name"])
        except (ValueError, KeyError, TypeError):
            return None

    def __str__(self) -> str:
        return (
            f"{self.status} {self.event} model={self.model_name} query={self.query} "
            f"delivery_id={self.delivery_id} body={self.body}"
        )


@dataclass
class RelayAnswers:
    """Every answer the relay gave, in arrival order (thread-safe)."""

    _answers: list[RelayAnswer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: RelayAnswer) -> None:
        with self._lock:
            self._answers.append(answer)

    def all(self) -> list[RelayAnswer]:
        with self._lock:
            return list(self._answers)

    def where(self, **query: str) -> list[RelayAnswer]:
        """Answers to requests whose URL query contained every ``key=value`` given."""
        return [a for a in self.all() if all(a.query.get(k) == v for k, v in query.items())]

    def describe(self) -> str:
        return "\n".join(f"  {a}" for a in self.all()) or "  (no request reached the relay)"


@dataclass(frozen=True)
class RelayUnderTest:
    """The relay on loopback: ``webhook_url`` is what senders are configured with."""

    base_url: str
    answers: RelayAnswers

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/api/{RELAY_ROUTE}"


def relay_setting_names() -> list[str]:
    """Every app setting the relay reads (so a test starts from none of them set)."""
    from relay.settings import SETTING_NAMES

    return sorted(SETTING_NAMES)


def _recording(handler: Callable[[Any], Any], answers: RelayAnswers) -> Callable[[Any], Any]:
    def handle(request: Any) -> Any:
        response = handler(request)
        raw = response.get_body() or b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        answers.add(
            RelayAnswer(response.status_code, dict(request.headers), dict(request.params), request.get_body(), body)
        )
        return response

    return handle


@pytest.fixture
def start_relay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, devops_standin: DevOpsStandIn
) -> Iterator[Callable[..., RelayUnderTest]]:
    """Start the relay (registered functions, loopback host) against ``devops_standin``.

    Call it as ``start_relay(rules_yaml, webhook_secret=...)``; extra keyword arguments become
    app settings (e.g. ``WEBHOOK_MAX_AGE_SECONDS="30"``). Stopped and reset after the test.
    """
    import function_app
    from relay.composition import reset_relay
    from relay_tools.local_host import LocalFunctionsHost

    hosts: list[LocalFunctionsHost] = []

    def start(rules_yaml: str, *, webhook_secret: str, **settings: str) -> RelayUnderTest:
        for name in relay_setting_names():
            monkeypatch.delenv(name, raising=False)
        rules_file = tmp_path / f"routes-{len(hosts)}.yaml"
        rules_file.write_text(rules_yaml, encoding="utf-8")
        environment = {
            "WEBHOOK_SECRET": webhook_secret,
            "DEVOPS_ORG_URL": devops_standin.org_url,
            "DEVOPS_PROJECT": "MLOps",
            "DEVOPS_AUTH": "pat",
            "DEVOPS_PAT": devops_standin.pat or "",
            "DEVOPS_CA_BUNDLE": str(devops_standin.tls.ca_file),
            "ROUTES_FILE": str(rules_file),
            **settings,
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        reset_relay()
        answers = RelayAnswers()
        host = LocalFunctionsHost(function_app.app, "127.0.0.1", 0)
        host.functions = {
            route: replace(f, handler=_recording(f.handler, answers)) for route, f in host.functions.items()
        }
        assert RELAY_ROUTE.lower() in host.functions, f"function_app registers no /api/{RELAY_ROUTE}"
        host.start_in_thread()
        hosts.append(host)
        return RelayUnderTest(host.base_url, answers)

    try:
        yield start
    finally:
        for host in hosts:
            host.shutdown()
            host.server_close()
        reset_relay()

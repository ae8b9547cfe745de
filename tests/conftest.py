"""Shared fixtures for the unit suites (webhook/, devops/, relay/).

Scopes are deliberate: recorded samples and the registered Azure Functions are read once per
session (``app.get_functions()`` may only be called once per process); anything touching the
environment, the process-wide relay or a clock is function-scoped.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.settings import SETTING_NAMES
from tests.recorded_samples import RECORDED_SEQUENCE, SAMPLES_DIR

TEST_WEBHOOK_SECRET = "whsec-unit-7f3a9c1e5b2d4f60"
TEST_DEVOPS_PAT = "pat-unit-q8w7e6r5t4y3u2i1o0p9"
TEST_ORG_URL = "https://dev.azure.com/contoso"
TEST_PROJECT = "MLOps"

TEST_RULES = """\
rules:
  - name: production
    pipeline_id: 13
    when:
      to_stage: Production
  - name: staging
    pipeline_id: 12
    when:
      to_stage: Staging
      from_stage: [None, Archived]
  - name: champion-deploy
    pipeline_id: 13
    when:
      event: model_version_alias.created
      alias: champion
  - name: champion-audit
    pipeline_id: 14
    branch: refs/heads/main
    parameters:
      model: "{model_name}"
      version: "{version}"
    when:
      event: model_version_alias.created
      alias: champion
"""


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a test's in-process CLI or job does to logging (``basicConfig(force=True)``,
    per-logger levels): its handler writes to that test's captured stderr, which pytest closes,
    so a later test's log lines (from a harness thread, say) would meet a closed file."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in loggers.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


@dataclass(frozen=True)
class RecordedDelivery:
    """One recorded MLflow delivery: headers as sent, the exact body bytes, its secret."""

    name: str
    secret: str
    headers: dict[str, str]
    body: bytes

    @property
    def timestamp(self) -> int:
        return int(self.headers["X-MLflow-Timestamp"])

    @property
    def delivery_id(self) -> str:
        return self.headers["X-MLflow-Delivery-Id"]

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.body)


def _load_recorded() -> dict[str, RecordedDelivery]:
    found = {}
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        name = path.name.removesuffix(".json")
        found[name] = RecordedDelivery(name, raw["secret"], dict(raw["headers"]), raw["body"].encode("utf-8"))
    return found


@pytest.fixture(scope="session")
def recorded_deliveries() -> dict[str, RecordedDelivery]:
    """Every recorded MLflow 3.17.2 delivery, by file name without ``.json``."""
    found = _load_recorded()
    missing = sorted(set(RECORDED_SEQUENCE) - set(found))
    assert not missing, f"{SAMPLES_DIR} lacks {missing}: run scripts/record_samples.py"
    return found


@dataclass
class FakeClock:
    """A controllable clock; ``sleep`` advances it and records the wait."""

    now: float = 1_800_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- Signed requests -------------------------------------------------------------------------


class Deliveries:
    """Builds signed Databricks and MLflow requests (a fixture, so test modules need no imports).

    Attributes hold the test environment's values: ``secret``, ``pat``, ``org_url``, ``project``.
    """

    secret = TEST_WEBHOOK_SECRET
    pat = TEST_DEVOPS_PAT
    org_url = TEST_ORG_URL
    project = TEST_PROJECT

    @staticmethod
    def databricks_body(**overrides: Any) -> bytes:
        """A Databricks registry webhook body, timestamped now unless overridden."""
        document: dict[str, Any] = {
            "event": "MODEL_VERSION_TRANSITIONED_STAGE",
            "webhook_id": "c5b0712d2d4a4c2d9e6c3f3a",
            "event_timestamp": int(time.time() * 1000),
            "model_name": "wine-quality",
            "version": "3",
            "to_stage": "Production",
            "from_stage": "Staging",
            "text": "promoted",
        }
        document.update(overrides)
        return json.dumps(document).encode("utf-8")

    @staticmethod
    def mlflow_body(entity: str = "model_version_alias", action: str = "created", **data: Any) -> bytes:
        payload = data or {"name": "wine-quality", "alias": "champion", "version": "3"}
        document = {
            "entity": entity,
            "action": action,
            "timestamp": "2026-11-28T15:29:01.109946+00:00",
            "data": payload,
        }
        return json.dumps(document).encode("utf-8")

    @staticmethod
    def databricks_headers(body: bytes, secret: str = TEST_WEBHOOK_SECRET) -> dict[str, str]:
        from webhook.signatures import sign_databricks

        return {"Content-Type": "application/json", "X-Databricks-Signature": sign_databricks(body, secret=secret)}

    @staticmethod
    def mlflow_headers(
        body: bytes,
        secret: str = TEST_WEBHOOK_SECRET,
        *,
        timestamp: int | None = None,
        delivery_id: str | None = None,
    ) -> dict[str, str]:
        from webhook.signatures import mlflow_signed_headers

        delivery_id = delivery_id or str(uuid.uuid4())
        timestamp = int(time.time()) if timestamp is None else timestamp
        return mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)

    @staticmethod
    def answer(response: Any) -> dict[str, Any]:
        """The JSON body of an ``azure.functions.HttpResponse``."""
        return json.loads(response.get_body())


@pytest.fixture(scope="session")
def deliveries() -> Deliveries:
    return Deliveries()


# --- The registered function and the process-wide relay -------------------------------------


@pytest.fixture(scope="session")
def webhook_function() -> Callable[..., Any]:
    """The HTTP function's user function, from ``app.get_functions()`` (called once, cached)."""
    import function_app
    from relay_tools.local_host import registered_functions

    for function in registered_functions(function_app.app):
        trigger = function.get_trigger()
        if trigger is not None and trigger.get_binding_name() == "httpTrigger":
            return function.get_user_function()
    raise AssertionError("function_app registers no HTTP function")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No relay setting in the environment, and no cached relay before or after."""
    from relay.composition import reset_relay

    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_relay()
    yield monkeypatch
    reset_relay()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(TEST_RULES, encoding="utf-8")
    return path


@pytest.fixture
def relay_env(clean_env: pytest.MonkeyPatch, rules_file: Path) -> pytest.MonkeyPatch:
    """A complete local-development environment: secrets from env, PAT auth (opted in), test rules."""
    clean_env.setenv("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET)
    clean_env.setenv("DEVOPS_ORG_URL", TEST_ORG_URL)
    clean_env.setenv("DEVOPS_PROJECT", TEST_PROJECT)
    clean_env.setenv("DEVOPS_AUTH", "pat")
    clean_env.setenv("DEVOPS_PAT", TEST_DEVOPS_PAT)
    clean_env.setenv("ROUTES_FILE", str(rules_file))
    return clean_env


@pytest.fixture
def call_webhook(webhook_function: Callable[..., Any]) -> Callable[..., Any]:
    """Call the registered HTTP function like the Functions host would."""
    import azure.functions as func

    def call(body: bytes = b"", headers: dict[str, str] | None = None, *, method: str = "POST") -> Any:
        request = func.HttpRequest(
            method=method,
            url="http://localhost:7071/api/MLflowWebHookTransition",
            headers=headers or {},
            params={},
            route_params={},
            body=body,
        )
        return webhook_function(request)

    return call

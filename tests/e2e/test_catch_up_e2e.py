"""Catch-up against a real ``mlflow server``: a move made while the relay was down is started once.

MLflow delivers through a front door that can play "relay down" (503, no Retry-After, the
request recorded). While down, ``champion`` is moved; MLflow retries three times and gives up,
as it does in production. Then the registered timer function catches up (one run), the CLI's
``catch-up`` finds nothing more to do, and MLflow's recorded delivery, sent late, is answered
``duplicate`` by the state gate. Ledger, marks and delivery log are in Azurite.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import azure.functions as func
import httpx
import pytest
from azure.functions.timer import TimerRequest

from relay.composition import current_relay
from relay_tools.cli import main
from relay_tools.local_host import registered_functions
from standins.devops import DevOpsStandIn
from tests.azurite_fixtures import azurite

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from standins.azurite import Azurite
    from tests.e2e.conftest import MlflowServer, RelayUnderTest

__all__ = ["azurite"]
pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

RULES = """\
rules:
  - name: champion-deploy
    pipeline_id: 13
    when:
      event: model_version_alias.created
      alias: champion
"""
GIVE_UP_SECONDS = 40.0  # MLflow's 3 retries with backoff (about 6 s plus jitter), with room to spare


@dataclass
class FrontDoor:
    """A loopback proxy in front of the relay that can be "down": 503, and the request kept."""

    target: str
    up: bool = True
    refused: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        door = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                if not door.up:
                    door.refused.append((headers, body))
                    self._reply(503, b'{"status": "unavailable"}')
                    return
                answer = httpx.post(door.target, content=body, headers=headers, timeout=30)
                self._reply(answer.status_code, answer.content)

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="front-door", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/MLflowWebHookTransition"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def door() -> Iterator[Callable[[str], FrontDoor]]:
    opened: list[FrontDoor] = []

    def open_door(target: str) -> FrontDoor:
        opened.append(FrontDoor(target))
        return opened[-1]

    yield open_door
    for front in opened:
        front.close()


def delivery_id(headers: dict[str, str]) -> str:
    return next(v for k, v in headers.items() if k.lower() == "x-mlflow-delivery-id")


def timer_function() -> Callable[[func.TimerRequest], None]:
    import function_app

    for function in registered_functions(function_app.app):
        if function.get_function_name() == "CatchUpMissedEvents":
            return function.get_user_function()  # type: ignore[no-any-return]
    raise AssertionError("function_app registers no CatchUpMissedEvents")


def test_a_move_made_while_the_relay_was_down_is_caught_up_once_and_the_late_delivery_is_a_duplicate(
    mlflow_server: MlflowServer,
    mlflow_client: MlflowClient,
    devops_standin: DevOpsStandIn,
    start_relay: Callable[..., RelayUnderTest],
    azurite: Azurite,
    door: Callable[[str], FrontDoor],
    wait_for: Callable[..., Any],
) -> None:
    client = mlflow_client
    secret = f"whsec-catch-up-{uuid.uuid4().hex}"
    tables = uuid.uuid4().hex[:12]
    relay = start_relay(
        RULES,
        webhook_secret=secret,
        AzureWebJobsStorage=azurite.connection_string,
        IDEMPOTENCY_TABLE=f"ledger{tables}",
        DELIVERY_LOG_TABLE=f"log{tables}",
        CATCH_UP_REGISTRIES=f"mlflow={mlflow_server.url}",
    )
    front = door(relay.webhook_url)
    client.create_webhook(name="relay-catch-up", url=front.url, events=["model_version_alias.created"], secret=secret)
    model = f"e2e-catch-up-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    run = client.create_run(client.create_experiment(f"{model}-training"))
    for _ in range(2):
        client.create_model_version(model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

    # Up: champion -> 1 is delivered and triggered (the state mark says 1).
    client.set_registered_model_alias(model, "champion", "1")
    wait_for(lambda: devops_standin.runs, timeout=20, describe=lambda: f"no run for v1: {relay.answers.describe()}")
    assert [r.template_parameters["model_version"] for r in devops_standin.runs] == ["1"]

    # Down: champion -> 2; MLflow tries 1 + 3 times, then gives up.
    front.up = False
    client.set_registered_model_alias(model, "champion", "2")
    wait_for(
        lambda: len(front.refused) >= 4,
        timeout=GIVE_UP_SECONDS,
        describe=lambda: f"MLflow retried {len(front.refused)} times",
    )
    time.sleep(2)
    headers, body = front.refused[-1]
    assert {json.loads(b)["data"]["version"] for _, b in front.refused} == {"2"}
    assert len({delivery_id(h) for h, _ in front.refused}) == 1, "retries resend the same delivery"
    assert len(devops_standin.runs) == 1

    # The timer catches up: exactly one run, for version 2, under a catch-up delivery id.
    timer_function()(TimerRequest())
    assert [r.template_parameters["model_version"] for r in devops_standin.runs] == ["1", "2"]
    caught_up = devops_standin.runs[1].template_parameters["delivery_id"]
    assert caught_up.startswith("catch-up-")

    # A second catch-up (the CLI, same storage) finds the state already the last one triggered.
    assert main(["catch-up", "--tracking-uri", mlflow_server.url, "--json"]) == 0
    assert len(devops_standin.runs) == 2

    # The relay is back; MLflow's delivery arrives late: a duplicate, nothing started.
    front.up = True
    late = httpx.post(front.url, content=body, headers=headers, timeout=30)
    assert late.status_code == 200 and late.json()["status"] == "duplicate", late.text
    assert [r["run_id"] for r in late.json()["runs"]] == [devops_standin.runs[1].run_id]
    time.sleep(1)
    assert len(devops_standin.runs) == 2 and len(devops_standin.api_requests) == 2

    parts = current_relay().log
    assert parts is not None and parts.log.flush(timeout=20)
    catch_up_record = parts.store.get(caught_up)
    assert catch_up_record is not None and (catch_up_record.origin, catch_up_record.status) == ("catch-up", "triggered")
    late_record = parts.store.get(delivery_id(headers))
    assert late_record is not None and late_record.status == "duplicate"
    assert "catch-up" in late_record.current_detail

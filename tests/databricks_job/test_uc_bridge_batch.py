"""A trigger's batch through the bridge into the relay's registered function, in process.

The registry is a real local MLflow registry (sqlite); the relay is ``function_app``'s HTTP
function with its in-memory ledger; Azure DevOps is mocked with respx. The bridge reaches the
relay through an ``httpx.MockTransport`` that calls the registered function with the exact
bytes and headers it would have sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from databricks_job.uc_bridge import main
from relay.composition import current_relay

RULES = """\
rules:
  - name: uc-validate
    pipeline_id: 12
    when: {event: model_version.created, model: "main.mlops.*"}
  - name: uc-champion
    pipeline_id: 13
    when: {event: model_version_alias.created, alias: champion, model: "main.mlops.*"}
"""
RUNS = "https://dev.azure.com/contoso/MLOps/_apis/pipelines/{}/runs"


@pytest.fixture
def devops() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:  # an unmocked request fails the test
        yield mock


@pytest.fixture
def relay(
    relay_env: pytest.MonkeyPatch, tmp_path: Path, call_webhook: Callable[..., Any]
) -> Callable[[list[httpx.Request]], httpx.MockTransport]:
    """The relay with ``RULES``, as a transport for the bridge; records what reached it."""
    rules = tmp_path / "uc-routes.yaml"
    rules.write_text(RULES, encoding="utf-8")
    relay_env.setenv("ROUTES_FILE", str(rules))

    def transport(seen: list[httpx.Request]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            answer = call_webhook(request.content, dict(request.headers))
            return httpx.Response(answer.status_code, content=answer.get_body(), headers=dict(answer.headers))

        return httpx.MockTransport(handle)

    return transport


class Pipelines:
    """Azure DevOps' pipeline-runs endpoint for 12 and 13; 13 refuses while ``refusing`` is set."""

    def __init__(self, devops: respx.MockRouter) -> None:
        self.started: list[tuple[int, dict[str, str]]] = []
        self.refusing = False
        for pipeline_id in (12, 13):
            devops.post(RUNS.format(pipeline_id)).mock(side_effect=self._answer(pipeline_id))
            # Runs - List, as the relay reads it before re-posting a delivery it has seen before.
            devops.get(RUNS.format(pipeline_id)).mock(side_effect=self._listing(pipeline_id))

    def _listing(self, pipeline_id: int) -> Callable[[httpx.Request], httpx.Response]:
        def listing(request: httpx.Request) -> httpx.Response:
            ids = [500 + i for i, (p, _) in enumerate(self.started, start=1) if p == pipeline_id]
            return httpx.Response(200, json={"value": [{"id": i, "createdDate": "2999-01-01T00:00:00Z"} for i in ids]})

        return listing

    def _answer(self, pipeline_id: int) -> Callable[[httpx.Request], httpx.Response]:
        def answer(request: httpx.Request) -> httpx.Response:
            if pipeline_id == 13 and self.refusing:
                return httpx.Response(400, json={"message": "Unexpected parameter 'alias'", "typeKey": "X"})
            self.started.append((pipeline_id, json.loads(request.content)["templateParameters"]))
            run_id = 500 + len(self.started)
            return httpx.Response(200, json={"id": run_id, "_links": {"web": {"href": f"https://r/{run_id}"}}})

        return answer


def test_batch_with_a_repeat_and_a_refusal_then_a_repaired_run(
    local_registry: Any,
    relay: Callable[[list[httpx.Request]], httpx.MockTransport],
    devops: respx.MockRouter,
    deliveries: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """All updates tried; the failed one is named; the repaired run sends all, only it starts a run."""
    client = local_registry.client
    name = "main.mlops.wine"
    client.create_registered_model(name)
    for _ in range(2):
        local_registry.add_version(name)
    batch = json.dumps(
        [
            {"full_name": name, "version": 1},
            {"full_name": name, "version": 2},
            {"full_name": name, "version": 2, "alias_name": "champion"},
            {"full_name": name, "version": 1},  # listed twice in one batch: one state, one delivery
            {"full_name": "main.mlops.missing", "version": 1},  # not in the registry: fails on its own
        ]
    )
    pipelines = Pipelines(devops)
    pipelines.refusing = True
    argv = [
        "--relay-url",
        "https://relay.test/api/MLflowWebHookTransition",
        "--model-updates",
        batch,
        "--secret-scope",
        "relay",
        "--job-run-id",
        "9001",
    ]
    seen: list[httpx.Request] = []

    def run_bridge() -> tuple[int, str, str]:
        code = main(
            argv,
            registry=client,
            secret_provider=lambda scope, key: deliveries.secret,
            transport=relay(seen),
            sleep=lambda seconds: None,
        )
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = run_bridge()

    assert code == 1
    assert [p for p, _ in pipelines.started] == [12, 12]
    assert out.count("HTTP 200 triggered") == 2 and "version=1 as " in out and "version=2 as " in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 4 updates not delivered: ")
    assert f"name={name} version=2 alias=champion (relay refused delivery" in last
    assert "HTTP 424" in last  # a refusal is answered once and not retried
    assert "name=main.mlops.missing version=1 (" in last
    first_ids = [r.headers["X-MLflow-Delivery-Id"] for r in seen]
    assert len(seen) == 3  # three deliveries, the refused one tried once; the repeat not sent

    pipelines.refusing = False
    seen.clear()
    code, out, err = run_bridge()  # the pipeline is fixed, but the relay remembers the refusal
    assert code == 1 and out.count("HTTP 200 duplicate") == 2 and "HTTP 424" in err
    assert [p for p, _ in pipelines.started] == [12, 12]

    current_relay().ledger.reopen(f"{first_ids[2]}:uc-champion", by="operator")  # a deliberate replay
    seen.clear()
    code, out, err = run_bridge()  # a repair: the same run, the same batch

    assert code == 1  # the missing model still fails, and says so again
    assert [p for p, _ in pipelines.started] == [12, 12, 13]
    assert out.count("HTTP 200 duplicate") == 2 and out.count("HTTP 200 triggered") == 1
    assert "error: 1 of 4 updates not delivered: name=main.mlops.missing" in err
    assert [r.headers["X-MLflow-Delivery-Id"] for r in seen] == list(dict.fromkeys(first_ids))
    champion = pipelines.started[-1][1]
    assert (champion["model_name"], champion["model_version"], champion["alias"]) == (name, "2", "champion")
    assert champion["delivery_id"] == seen[-1].headers["X-MLflow-Delivery-Id"]


def test_every_update_delivered_exits_zero(
    local_registry: Any,
    relay: Callable[[list[httpx.Request]], httpx.MockTransport],
    devops: respx.MockRouter,
    deliveries: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "main.mlops.beer"
    local_registry.client.create_registered_model(name)
    local_registry.add_version(name)
    pipelines = Pipelines(devops)
    batch = json.dumps([{"full_name": name, "version": "1"}, {"full_name": "main.other.x", "version": "1"}])
    local_registry.client.create_registered_model("main.other.x")
    local_registry.add_version("main.other.x")
    argv = [
        "--relay-url",
        "https://relay.test/api/MLflowWebHookTransition",
        "--model-updates",
        batch,
        "--secret-scope",
        "relay",
        "--job-run-id",
        "9002",
    ]
    seen: list[httpx.Request] = []

    code = main(
        argv,
        registry=local_registry.client,
        secret_provider=lambda scope, key: deliveries.secret,
        transport=relay(seen),
        sleep=lambda seconds: None,
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "HTTP 200 triggered" in out and "HTTP 200 ignored" in out  # main.other.* matches no rule
    assert [p for p, _ in pipelines.started] == [12]


def test_an_empty_batch_delivers_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    def no_secret(scope: str, key: str) -> str:
        raise AssertionError("an empty batch needs no secret")

    argv = ["--relay-url", "https://relay.test/api", "--model-updates", "[]", "--secret-scope", "relay"]
    assert main(argv, registry=object(), secret_provider=no_secret) == 0
    assert "nothing to deliver" in capsys.readouterr().out


def test_batch_and_single_event_flags_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--relay-url",
        "https://relay.test/api",
        "--model-updates",
        '[{"full_name": "a.b.c"}]',
        "--model-name",
        "a.b.c",
        "--secret-scope",
        "relay",
    ]
    assert main(argv, registry=object(), secret_provider=lambda s, k: "x") == 2
    assert "not both" in capsys.readouterr().err

"""The Unity Catalog bridge: MLflow-format signed events, delivered with retries."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import responses

from databricks_job.errors import DeliveryFailed
from databricks_job.uc_bridge import main, post_signed, read_scope_secret
from databricks_job.uc_event import (
    alias_created_data,
    build_signed_request,
    delivery_id_for,
    derived_delivery_id,
    version_created_data,
)
from tests.recorded_samples import SAMPLES_DIR
from webhook.signatures import verify_mlflow_signature

SAMPLE = SAMPLES_DIR / "model_version_alias.created.json"
RELAY_URL = "https://relay.example.test/api/MLflowWebHookTransition"
SECRET = "bridge-unit-secret-4d2c"


class TestSignedRequest:
    """The bridge must be indistinguishable from an MLflow 3.17.2 server."""

    def test_reproduces_a_recorded_mlflow_delivery_byte_for_byte(self) -> None:
        sample = json.loads(SAMPLE.read_text())
        recorded = json.loads(sample["body"])
        request = build_signed_request(
            "model_version_alias.created",
            alias_created_data(name="aott-wine-model", alias="champion", version="1"),
            secret=sample["secret"],
            delivery_id=sample["headers"]["X-MLflow-Delivery-Id"],
            now=datetime.fromisoformat(recorded["timestamp"]),
        )
        assert request.body == sample["body"].encode()
        assert request.headers == sample["headers"]

    def test_naive_time_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            build_signed_request("model_version.created", {}, secret="s", delivery_id="d", now=datetime(2026, 1, 1))

    def test_derived_delivery_id_names_the_update_not_what_the_registry_says_about_it(self) -> None:
        def version(tags: dict[str, str]) -> dict[str, object]:
            return version_created_data(name="c.s.m", version="4", source="s", run_id="r", tags=tags, description=None)

        event = "model_version.created"
        same = derived_delivery_id(event, version({"a": "1"}), job_run_id="77")
        assert derived_delivery_id(event, version({"a": "2", "b": "3"}), job_run_id="77") == same  # repaired run
        assert derived_delivery_id(event, version({}), job_run_id="78") != same  # the next trigger run
        champion = alias_created_data(name="c.s.m", alias="champion", version="4")
        challenger = alias_created_data(name="c.s.m", alias="challenger", version="4")
        ids = {
            derived_delivery_id(e, d, job_run_id="77")
            for e, d in [("model_version_alias.created", champion), ("model_version_alias.created", challenger)]
        }
        assert len(ids | {same}) == 3

    def test_delivery_id_is_stable_for_one_job_run_and_fresh_without_one(self) -> None:
        data = alias_created_data(name="c.s.m", alias="champion", version="4")
        assert delivery_id_for("e", data, job_run_id="77") == delivery_id_for("e", data, job_run_id="77")
        assert delivery_id_for("e", data, job_run_id="77") != delivery_id_for("e", data, job_run_id="78")
        assert delivery_id_for("e", data) != delivery_id_for("e", data)


def _request() -> Any:
    data = alias_created_data(name="c.s.m", alias="champion", version="4")
    return build_signed_request(
        "model_version_alias.created", data, secret=SECRET, delivery_id="dlv-1", now=datetime.now(UTC)
    )


def _client(answers: list[httpx.Response | Exception], seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(transport=httpx.MockTransport(handler))


class TestDelivery:
    """5xx/429/connection errors are retried unchanged; a 4xx fails loudly at once."""

    def test_retries_a_503_after_its_retry_after_with_the_same_delivery(self) -> None:
        seen: list[httpx.Request] = []
        sleeps: list[float] = []
        client = _client([httpx.Response(503, headers={"Retry-After": "7"}), httpx.Response(202)], seen)

        response = post_signed(client, RELAY_URL, _request(), sleep=sleeps.append)

        assert response.status_code == 202
        assert sleeps == [7.0]
        assert {r.headers["X-MLflow-Delivery-Id"] for r in seen} == {"dlv-1"}
        assert seen[0].content == seen[1].content

    def test_connection_errors_and_429_back_off(self) -> None:
        seen: list[httpx.Request] = []
        sleeps: list[float] = []
        answers: list[httpx.Response | Exception] = [
            httpx.ConnectError("refused"),
            httpx.Response(429),
            httpx.Response(200),
        ]
        post_signed(_client(answers, seen), RELAY_URL, _request(), sleep=sleeps.append)
        assert sleeps == [1.0, 2.0]

    def test_a_4xx_is_not_retried(self) -> None:
        seen: list[httpx.Request] = []
        client = _client([httpx.Response(401, text="signature does not match")], seen)
        with pytest.raises(DeliveryFailed, match="HTTP 401 signature does not match"):
            post_signed(client, RELAY_URL, _request(), sleep=lambda s: None)
        assert len(seen) == 1

    def test_gives_up_after_the_last_attempt(self) -> None:
        seen: list[httpx.Request] = []
        client = _client([httpx.Response(500)] * 4, seen)
        with pytest.raises(DeliveryFailed, match="after 4 tries: HTTP 500"):
            post_signed(client, RELAY_URL, _request(), sleep=lambda s: None)
        assert len(seen) == 4

    def test_an_http_date_retry_after_is_honoured_and_every_wait_is_capped(self) -> None:
        now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC).timestamp()
        answers: list[httpx.Response | Exception] = [
            httpx.Response(503, headers={"Retry-After": "Sat, 28 Nov 2026 12:00:12 GMT"}),
            httpx.Response(429, headers={"Retry-After": "86400"}),
            httpx.Response(503, headers={"Retry-After": "soon"}),
            httpx.Response(200),
        ]
        sleeps: list[float] = []
        post_signed(_client(answers, []), RELAY_URL, _request(), sleep=sleeps.append, clock=lambda: now)
        assert sleeps == [12.0, 60.0, 4.0]  # the date, the cap, then the backoff for a value that is neither


class TestEntryPoint:
    """``relay-uc-bridge`` reads the registry, signs with the scope secret, and the relay can verify it."""

    @pytest.fixture
    def relay(self) -> tuple[list[httpx.Request], httpx.MockTransport]:
        received: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            received.append(request)
            verify_mlflow_signature(
                request.content,
                delivery_id=request.headers.get("X-MLflow-Delivery-Id"),
                timestamp=request.headers.get("X-MLflow-Timestamp"),
                signature=request.headers.get("X-MLflow-Signature"),
                secrets=[SECRET],
                now=datetime.now(UTC).timestamp(),
                max_age=600,
            )
            return httpx.Response(202, json={"status": "accepted"})

        return received, httpx.MockTransport(handler)

    def test_alias_event_resolves_the_version_from_the_alias(self, local_registry: Any, relay: Any) -> None:
        received, transport = relay
        name = local_registry.register()
        local_registry.client.set_registered_model_alias(name, "champion", "1")
        argv = [
            "--relay-url",
            RELAY_URL,
            "--model-name",
            name,
            "--alias",
            "champion",
            "--secret-scope",
            "relay",
            "--job-run-id",
            "5150",
        ]

        code = main(
            argv, registry=local_registry.client, secret_provider=lambda scope, key: SECRET, transport=transport
        )

        assert code == 0
        body = json.loads(received[0].content)
        assert (body["entity"], body["action"]) == ("model_version_alias", "created")
        assert body["data"] == {"name": name, "alias": "champion", "version": "1"}

    def test_version_created_event_carries_registry_details(self, local_registry: Any, relay: Any) -> None:
        received, transport = relay
        name = local_registry.register()
        local_registry.client.set_model_version_tag(name, "1", "team", "ml")
        argv = [
            "--relay-url",
            RELAY_URL,
            "--event",
            "model_version.created",
            "--model-name",
            name,
            "--model-version",
            "1",
            "--secret-scope",
            "relay",
        ]

        assert main(argv, registry=local_registry.client, secret_provider=lambda s, k: SECRET, transport=transport) == 0

        data = json.loads(received[0].content)["data"]
        assert data["source"] == local_registry.signed_model_uri
        assert data["tags"] == {"team": "ml"}
        assert data["run_id"]

    def test_refused_delivery_exits_non_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(400, text="bad payload"))
        argv = [
            "--relay-url",
            RELAY_URL,
            "--model-name",
            "c.s.m",
            "--model-version",
            "2",
            "--alias",
            "a",
            "--secret-scope",
            "relay",
        ]

        assert main(argv, registry=object(), secret_provider=lambda s, k: SECRET, transport=transport) == 1
        captured = capsys.readouterr()
        assert "HTTP 400 bad payload" in captured.err
        assert SECRET not in captured.out + captured.err


class TestScopeSecret:
    """The secret comes from a Databricks secret scope through the SDK (mocked REST here)."""

    @responses.activate
    def test_reads_and_decodes_the_scope_secret(self, databricks_workspace: Any) -> None:
        responses.add(
            responses.GET,
            "https://adb-1.azuredatabricks.net/api/2.0/secrets/get",
            json={"key": "mlflow-webhook-secret", "value": base64.b64encode(SECRET.encode()).decode()},
            match=[responses.matchers.query_param_matcher({"scope": "relay", "key": "mlflow-webhook-secret"})],
        )
        assert read_scope_secret("relay", "mlflow-webhook-secret", workspace=databricks_workspace()) == SECRET

"""``mlflow-relay webhooks``: a real local MLflow registry, and Databricks over mocked REST."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import responses

from relay_tools.webhooks_admin import add_webhooks_parser, default_backend
from standins.databricks import DATABRICKS_HOST as HOST
from standins.databricks import fake_workspace
from webhook.signatures import verify_mlflow_signature

SECRET = "whsec-admin-unit-9c1e"
NEW_SECRET = "whsec-admin-rotated-3b7a"
RELAY_URL = "https://relay.example.test/api/MLflowWebHookTransition"


def run(argv: list[str], *, secret: str = SECRET, backend_factory: Any = default_backend) -> tuple[int, str]:
    """Parse like the ``mlflow-relay`` CLI will, run the handler, return (exit code, output)."""
    parser = argparse.ArgumentParser(prog="mlflow-relay")
    add_webhooks_parser(parser.add_subparsers(dest="command"), backend_factory=backend_factory)
    args = parser.parse_args(["webhooks", *argv])
    out = io.StringIO()
    code = args.func(args, secret_provider=lambda: secret, out=out)
    return code, out.getvalue()


class RecordingRelay(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status = 202

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(({k: v for k, v in self.headers.items()}, body))
        answer = json.dumps({"status": "accepted", "matched": []}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_relay() -> Iterator[str]:
    RecordingRelay.received = []
    RecordingRelay.status = 202
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingRelay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/MLflowWebHookTransition"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sqlite registry per module (creating its schema takes seconds); tests use distinct URLs."""
    pytest.importorskip("mlflow")
    with pytest.MonkeyPatch.context() as env:
        # MLflow refuses http:// and loopback webhook URLs by default (SSRF protection); the
        # loopback relay below needs both.
        env.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
        env.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
        yield f"sqlite:///{tmp_path_factory.mktemp('webhooks') / 'mlflow.db'}"


def _ids_for(listing: str, url: str) -> list[str]:
    return [line.split("\t")[0] for line in listing.splitlines() if f"\t{url}\t" in line]


class TestMlflowWebhooks:
    """Against a real MLflow 3.17.2 registry on sqlite (no server)."""

    def test_create_twice_updates_instead_of_duplicating(self, mlflow_uri: str) -> None:
        from mlflow import MlflowClient

        base = ["create", "--platform", "mlflow", "--tracking-uri", mlflow_uri, "--url", RELAY_URL]
        first_code, first = run(base)
        second_code, second = run([*base, "--events", "model_version_alias.created"], secret=NEW_SECRET)

        assert (first_code, second_code) == (0, 0)
        assert first.startswith("created\t") and second.startswith("updated\t")
        (hook,) = [h for h in MlflowClient(mlflow_uri, mlflow_uri).list_webhooks() if h.url == RELAY_URL]
        assert [str(e) for e in hook.events] == ["model_version_alias.created"]
        assert MlflowClient(mlflow_uri, mlflow_uri).get_webhook(hook.webhook_id).secret == NEW_SECRET
        assert SECRET not in first + second and NEW_SECRET not in second

    def test_list_test_and_delete(self, mlflow_uri: str, loopback_relay: str) -> None:
        common = ["--platform", "mlflow", "--tracking-uri", mlflow_uri]
        run(["create", *common, "--url", loopback_relay])
        code, listing = run(["list", *common])
        (webhook_id,) = _ids_for(listing, loopback_relay)
        assert code == 0 and "model_version_alias.created" in listing

        code, answer = run(["test", *common, "--id", webhook_id, "--event", "model_version_alias.created"])

        assert code == 0
        assert "relay answered HTTP 202" in answer and '"accepted"' in answer
        ((headers, body),) = RecordingRelay.received
        verify_mlflow_signature(
            body,
            delivery_id=headers["X-MLflow-Delivery-Id"],
            timestamp=headers["X-MLflow-Timestamp"],
            signature=headers["X-MLflow-Signature"],
            secrets=[SECRET],
            now=time.time(),
            max_age=600,
        )
        assert json.loads(body)["entity"] == "model_version_alias"

        assert run(["delete", *common, "--id", webhook_id]) == (0, f"deleted\t{webhook_id}\n")
        assert _ids_for(run(["list", *common])[1], loopback_relay) == []

    def test_a_relay_refusal_fails_the_test_command(self, mlflow_uri: str, loopback_relay: str) -> None:
        RecordingRelay.status = 401
        common = ["--platform", "mlflow", "--tracking-uri", mlflow_uri]
        run(["create", *common, "--url", loopback_relay])
        (webhook_id,) = _ids_for(run(["list", *common])[1], loopback_relay)

        code, answer = run(["test", *common, "--id", webhook_id])

        assert code == 1 and answer.startswith("relay answered HTTP 401")


def databricks_backend(args: argparse.Namespace) -> Any:
    from relay_tools.webhooks_admin import DatabricksWebhooks

    return DatabricksWebhooks(fake_workspace())


def registry_webhook(webhook_id: str, url: str, model: str = "wine") -> dict[str, Any]:
    return {
        "id": webhook_id,
        "model_name": model,
        "status": "ACTIVE",
        "events": ["MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"],
        "http_url_spec": {"url": url, "enable_ssl_verification": True},
    }


class TestDatabricksWebhooks:
    """Databricks registry webhooks through databricks-sdk, REST mocked with ``responses``."""

    CREATE: ClassVar[list[str]] = ["create", "--platform", "databricks", "--model", "wine", "--url", RELAY_URL]

    @responses.activate
    def test_create_adds_a_webhook_with_the_secret_in_http_url_spec(self) -> None:
        responses.add(
            responses.GET,
            f"{HOST}/api/2.0/mlflow/registry-webhooks/list",
            json={"webhooks": [registry_webhook("other", "https://elsewhere.test/hook")]},
        )
        created = responses.add(
            responses.POST,
            f"{HOST}/api/2.0/mlflow/registry-webhooks/create",
            json={"webhook": registry_webhook("wh-1", RELAY_URL)},
        )

        code, out = run(self.CREATE, backend_factory=databricks_backend)

        assert code == 0 and out.startswith("created\twh-1\tACTIVE\twine\t")
        body = json.loads(created.calls[0].request.body)
        assert body["http_url_spec"] == {"url": RELAY_URL, "secret": SECRET, "enable_ssl_verification": True}
        assert body["model_name"] == "wine"
        assert body["events"] == ["MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"]
        assert SECRET not in out

    @responses.activate
    def test_create_updates_the_webhook_already_pointing_at_the_relay(self) -> None:
        responses.add(
            responses.GET,
            f"{HOST}/api/2.0/mlflow/registry-webhooks/list",
            json={"webhooks": [registry_webhook("wh-1", RELAY_URL + "/")]},
        )
        updated = responses.add(
            responses.PATCH,
            f"{HOST}/api/2.0/mlflow/registry-webhooks/update",
            json={"webhook": registry_webhook("wh-1", RELAY_URL)},
        )

        code, out = run(self.CREATE, secret=NEW_SECRET, backend_factory=databricks_backend)

        assert code == 0 and out.startswith("updated\twh-1")
        body = json.loads(updated.calls[0].request.body)
        assert body["id"] == "wh-1" and body["http_url_spec"]["secret"] == NEW_SECRET
        assert not [c for c in responses.calls if c.request.url.endswith("/create")]

    @responses.activate
    def test_test_shows_what_the_relay_answered(self) -> None:
        sent = responses.add(
            responses.POST,
            f"{HOST}/api/2.0/mlflow/registry-webhooks/test",
            json={"status_code": 401, "body": '{"error": "signature does not match"}'},
        )

        code, out = run(["test", "--platform", "databricks", "--id", "wh-1"], backend_factory=databricks_backend)

        assert code == 1
        assert out == 'relay answered HTTP 401\n{"error": "signature does not match"}\n'
        assert json.loads(sent.calls[0].request.body) == {"id": "wh-1"}

    @responses.activate
    def test_delete_by_id(self) -> None:
        deleted = responses.add(responses.DELETE, f"{HOST}/api/2.0/mlflow/registry-webhooks/delete", json={})

        assert run(["delete", "--platform", "databricks", "--id", "wh-1"], backend_factory=databricks_backend)[0] == 0
        assert deleted.calls[0].request.params == {"id": "wh-1"}


def test_create_requires_a_url() -> None:
    with pytest.raises(SystemExit):
        run(["create", "--platform", "mlflow"])

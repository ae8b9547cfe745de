"""The local host serves the registered HTTP function on a loopback port."""

from __future__ import annotations

import httpx
import pytest

import function_app
from relay_tools.local_host import LocalFunctionsHost


@pytest.fixture
def host(relay_env):
    relay_env.setenv("RELAY_DRY_RUN", "true")
    server = LocalFunctionsHost(function_app.app, "127.0.0.1", 0)
    server.start_in_thread()
    yield server
    server.shutdown()
    server.server_close()


class TestLocalFunctionsHost:
    def test_serves_the_registered_function(self, host, deliveries):
        body = deliveries.databricks_body()
        answer = httpx.post(
            f"{host.base_url}/api/MLflowWebHookTransition",
            content=body,
            headers=deliveries.databricks_headers(body),
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["status"] == "dry-run"

    def test_route_is_case_insensitive(self, host, deliveries):
        body = deliveries.databricks_body()
        answer = httpx.post(
            f"{host.base_url}/api/mlflowwebhooktransition",
            content=body,
            headers=deliveries.databricks_headers(body),
            timeout=10,
        )
        assert answer.status_code == 200

    def test_wrong_signature_is_refused_through_the_host(self, host, deliveries):
        body = deliveries.databricks_body()
        answer = httpx.post(
            f"{host.base_url}/api/MLflowWebHookTransition",
            content=body,
            headers=deliveries.databricks_headers(body, secret="forged"),
            timeout=10,
        )
        assert answer.status_code == 401

    def test_get_answers_405_with_allow_post(self, host):
        answer = httpx.get(f"{host.base_url}/api/MLflowWebHookTransition", timeout=10)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST"

    @pytest.mark.parametrize("path", ["/api/nope", "/MLflowWebHookTransition", "/", "/api/"])
    def test_unknown_route_is_404(self, host, path):
        assert httpx.post(f"{host.base_url}{path}", content=b"{}", timeout=10).status_code == 404

    def test_listens_on_loopback_only(self, host):
        assert host.server_address[0] == "127.0.0.1" and host.server_address[1] > 0

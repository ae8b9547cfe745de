"""Key Vault unreachable, with the real ``KeyVaultSecretSource`` and ``SecretClient``: the
relay answers 503 with Retry-After and starts nothing."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.credentials import AccessToken

import relay.composition
from standins.harness import RelayHarness, databricks_delivery, mlflow_delivery

pytestmark = pytest.mark.azurite


class StaticCredential:
    """A token credential that never leaves the machine (no managed identity endpoint)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("static-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("static-test-token", int(time.time()) + 3600)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("make_delivery", [mlflow_delivery, databricks_delivery], ids=["mlflow", "databricks"])
def test_unreachable_key_vault_answers_503_with_retry_after(
    harness: Callable[..., RelayHarness], monkeypatch: pytest.MonkeyPatch, make_delivery: Callable[[], Any]
) -> None:
    monkeypatch.setattr(relay.composition, "azure_credential", lambda client_id: StaticCredential())
    vault = harness(settings={"KEY_VAULT_URL": f"https://127.0.0.1:{_closed_port()}"})
    started = time.monotonic()
    answer = vault.post(make_delivery())
    elapsed = time.monotonic() - started
    assert answer.status == 503, answer.body
    assert answer.body["error"] == "SecretsUnavailable" and "Key Vault unreachable" in answer.body["detail"]
    assert int(answer.headers["Retry-After"]) >= 1
    assert vault.standin.api_requests == [] and vault.standin.runs == []
    assert elapsed < 5, f"an unreachable vault took {elapsed:.1f} s to answer"

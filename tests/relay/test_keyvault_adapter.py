"""``KeyVaultSecretSource`` with the real ``SecretClient`` over a faked HTTP layer.

The ``responses`` library answers the real ``RequestsTransport``; the vault first answers 401
with a challenge (as Key Vault does), then the canned answer once a bearer token is sent.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from types import SimpleNamespace

import pytest
import requests
import responses
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient

from relay.keyvault import KeyVaultSecretSource
from relay.ports import SecretsUnavailable
from relay.secrets import RelaySecrets
from webhook.errors import ConfigurationError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CHALLENGE = f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'


class FakeCredential:
    def __init__(self):
        self.calls = []

    def get_token(self, *scopes, **kwargs):
        self.calls.append((scopes, kwargs))
        return SimpleNamespace(token="kv-token", expires_on=int(time.time()) + 3600)


class FakeVault:
    """Answers like Key Vault: 401 + challenge without a token, else ``answer(name)``."""

    def __init__(self, answer):
        self.answer = answer
        self.authorised_requests = []

    def __call__(self, request):
        if request.headers.get("Authorization") != "Bearer kv-token":
            return (
                401,
                {"WWW-Authenticate": CHALLENGE, "Content-Type": "application/json"},
                json.dumps(
                    {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}}
                ),
            )
        self.authorised_requests.append(request)
        name = request.path_url.split("?")[0].rstrip("/").split("/secrets/")[1].split("/")[0]
        return self.answer(name)


def found(value):
    def answer(name):
        body = {"value": value, "id": f"https://vault/secrets/{name}/abc", "attributes": {"enabled": True}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    return answer


def error(status, code, message):
    def answer(name):
        return status, {"Content-Type": "application/json"}, json.dumps({"error": {"code": code, "message": message}})

    return answer


@pytest.fixture
def vault_url():
    # A fresh host per test: the SDK caches challenges per vault URL for the whole process.
    return f"https://kv-{uuid.uuid4().hex[:12]}.vault.azure.net"


@pytest.fixture
def credential():
    return FakeCredential()


@pytest.fixture
def source(vault_url, credential):
    def client():
        return SecretClient(
            vault_url=vault_url,
            credential=credential,
            transport=RequestsTransport(),
            retry_total=0,
            verify_challenge_resource=True,
        )

    return KeyVaultSecretSource(client)


@pytest.fixture
def vault():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def serve(vault, vault_url, answer):
    fake = FakeVault(answer)
    vault.add_callback(responses.GET, re.compile(re.escape(vault_url) + r"/secrets/.*"), callback=fake)
    return fake


class TestKeyVaultSecretSource:
    def test_secret_is_read_after_the_challenge(self, vault, vault_url, source, credential):
        fake = serve(vault, vault_url, found("hook-secret-value"))
        assert source.get("mlflow-webhook-secret") == "hook-secret-value"
        assert len(fake.authorised_requests) == 1
        assert fake.authorised_requests[0].path_url.startswith("/secrets/mlflow-webhook-secret")
        scopes, kwargs = credential.calls[0]
        assert scopes == ("https://vault.azure.net/.default",)
        assert kwargs.get("tenant_id") == TENANT

    def test_missing_secret_is_none(self, vault, vault_url, source):
        serve(vault, vault_url, error(404, "SecretNotFound", "A secret with (name/id) nope was not found"))
        assert source.get("nope") is None

    def test_forbidden_is_unavailable_with_the_role_hint(self, vault, vault_url, source):
        serve(vault, vault_url, error(403, "Forbidden", "Caller is not authorized to perform action"))
        with pytest.raises(SecretsUnavailable) as caught:
            source.get("devops-pat")
        assert "'devops-pat'" in caught.value.detail
        assert "Key Vault Secrets User" in caught.value.detail

    def test_server_error_is_unavailable(self, vault, vault_url, source):
        serve(vault, vault_url, error(500, "InternalError", "boom"))
        with pytest.raises(SecretsUnavailable, match="HTTP 500"):
            source.get("x")

    def test_connection_error_is_unavailable(self, vault, vault_url, source):
        vault.add(
            responses.GET,
            re.compile(re.escape(vault_url) + ".*"),
            body=requests.exceptions.ConnectionError("connection refused"),
        )
        with pytest.raises(SecretsUnavailable, match="unreachable"):
            source.get("x")

    def test_read_timeout_is_unavailable(self, vault, vault_url, source):
        vault.add(
            responses.GET,
            re.compile(re.escape(vault_url) + ".*"),
            body=requests.exceptions.ReadTimeout("read timed out"),
        )
        with pytest.raises(SecretsUnavailable):
            source.get("x")

    def test_client_is_built_once(self, vault, vault_url, credential):
        built = []

        def factory():
            built.append(1)
            return SecretClient(
                vault_url=vault_url, credential=credential, transport=RequestsTransport(), retry_total=0
            )

        serve(vault, vault_url, found("v"))
        source = KeyVaultSecretSource(factory)
        source.get("a")
        source.get("b")
        assert built == [1]

    def test_relay_secrets_over_key_vault_name_a_missing_secret(self, vault, vault_url, source):
        serve(vault, vault_url, error(404, "SecretNotFound", "not found"))
        secrets = RelaySecrets(
            source, webhook_name="mlflow-webhook-secret", previous_name=None, pat_name="devops-pat", ttl=300
        )
        with pytest.raises(ConfigurationError, match="'mlflow-webhook-secret' not found in Key Vault"):
            secrets.webhook_secrets()

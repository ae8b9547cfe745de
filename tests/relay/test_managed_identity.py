"""``AppServiceManagedIdentity``: the platform's identity endpoint spoken over httpx (respx answers),
and the real Key Vault client's challenge policy calling it as azure-core's ``TokenCredential``."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import httpx
import pytest
import respx

from relay.managed_identity import API_VERSION, AppServiceManagedIdentity
from relay.ports import SecretsUnavailable

ENDPOINT = "http://localhost:8081/msi/token"
HEADER = "identity-header-value"
CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
VAULT = "https://vault.azure.net"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def token_answer(token: str = "t-1", *, expires_on: float, resource: str = VAULT) -> httpx.Response:
    # As App Service sends it: expires_on is unix seconds in a string.
    return httpx.Response(
        200,
        json={
            "access_token": token,
            "expires_on": str(int(expires_on)),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": CLIENT_ID,
        },
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def endpoint():
    with respx.mock(assert_all_called=False) as mock:  # an unmocked request fails the test
        yield mock.get(ENDPOINT)


def credential(clock: Clock, client_id: str | None = CLIENT_ID) -> AppServiceManagedIdentity:
    return AppServiceManagedIdentity(ENDPOINT, identity_header=HEADER, client_id=client_id, clock=clock)


class TestTokenRequest:
    """One GET with the protocol's parameters and header."""

    def test_request_names_the_resource_the_identity_and_the_header(self, endpoint, clock):
        endpoint.mock(return_value=token_answer(expires_on=clock.now + 3600))
        token = credential(clock).get_token(f"{VAULT}/.default")
        assert (token.token, token.expires_on) == ("t-1", int(clock.now + 3600))
        request = endpoint.calls.last.request
        assert dict(request.url.params) == {"api-version": API_VERSION, "resource": VAULT, "client_id": CLIENT_ID}
        assert request.headers["X-IDENTITY-HEADER"] == HEADER

    def test_system_assigned_identity_sends_no_client_id(self, endpoint, clock):
        endpoint.mock(return_value=token_answer(expires_on=clock.now + 3600))
        credential(clock, client_id=None).get_token(VAULT)
        assert "client_id" not in endpoint.calls.last.request.url.params

    def test_more_than_one_scope_is_refused(self, endpoint, clock):
        with pytest.raises(ValueError, match="exactly one scope"):
            credential(clock).get_token(VAULT, "https://storage.azure.com/.default")
        assert not endpoint.called


class TestCache:
    """A token is reused until five minutes before it expires, per resource."""

    def test_second_call_uses_the_cached_token(self, endpoint, clock):
        endpoint.mock(return_value=token_answer(expires_on=clock.now + 3600))
        identity = credential(clock)
        identity.get_token(f"{VAULT}/.default")
        clock.now += 3600 - 301
        assert identity.get_token(f"{VAULT}/.default").token == "t-1"
        assert endpoint.call_count == 1

    def test_token_within_five_minutes_of_expiry_is_fetched_again(self, endpoint, clock):
        endpoint.side_effect = [
            token_answer("t-1", expires_on=clock.now + 3600),
            token_answer("t-2", expires_on=clock.now + 7200),
        ]
        identity = credential(clock)
        identity.get_token(VAULT)
        clock.now += 3600 - 300
        assert identity.get_token(VAULT).token == "t-2"
        assert endpoint.call_count == 2

    def test_claims_challenge_bypasses_the_cache(self, endpoint, clock):
        endpoint.side_effect = [
            token_answer("t-1", expires_on=clock.now + 3600),
            token_answer("t-2", expires_on=clock.now + 3600),
        ]
        identity = credential(clock)
        identity.get_token(VAULT)
        assert identity.get_token(VAULT, claims='{"access_token": {"nbf": {"essential": true}}}').token == "t-2"

    def test_each_resource_has_its_own_token(self, endpoint, clock):
        def answer(request: httpx.Request) -> httpx.Response:
            resource = request.url.params["resource"]
            return token_answer(f"for-{resource}", expires_on=clock.now + 3600, resource=resource)

        endpoint.side_effect = answer
        identity = credential(clock)
        assert identity.get_token(f"{VAULT}/.default").token == f"for-{VAULT}"
        assert identity.get_token("https://storage.azure.com/.default").token == "for-https://storage.azure.com"
        assert identity.get_token(VAULT).token == f"for-{VAULT}"
        assert endpoint.call_count == 2

    def test_concurrent_first_calls_share_one_request(self, endpoint, clock):
        gate = threading.Event()

        def slow(request: httpx.Request) -> httpx.Response:
            gate.wait(5)
            return token_answer(expires_on=clock.now + 3600)

        endpoint.side_effect = slow
        identity = credential(clock)
        tokens: list[str] = []
        threads = [threading.Thread(target=lambda: tokens.append(identity.get_token(VAULT).token)) for _ in range(5)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        gate.set()
        for thread in threads:
            thread.join(5)
        assert tokens == ["t-1"] * 5 and endpoint.call_count == 1


class TestErrors:
    """Every failure is ``SecretsUnavailable`` (503 + Retry-After), and never echoes a token."""

    def test_unreachable_endpoint(self, endpoint, clock):
        endpoint.side_effect = httpx.ConnectError("refused")
        with pytest.raises(SecretsUnavailable, match=re.escape("unreachable (ConnectError)")) as raised:
            credential(clock).get_token(VAULT)
        assert raised.value.retry_after >= 1

    def test_refusal_carries_the_status_and_the_endpoint_message(self, endpoint, clock):
        endpoint.mock(
            return_value=httpx.Response(
                400, json={"statusCode": 400, "message": "No managed identity found for specified ClientId"}
            )
        )
        expected = re.escape("HTTP 400 for resource 'https://vault.azure.net': No managed")
        with pytest.raises(SecretsUnavailable, match=expected):
            credential(clock).get_token(VAULT)

    def test_non_json_error_answer(self, endpoint, clock):
        endpoint.mock(return_value=httpx.Response(502, text="<html>Bad Gateway</html>"))
        expected = re.escape("answered HTTP 502 for resource 'https://vault.azure.net'") + "$"
        with pytest.raises(SecretsUnavailable, match=expected):
            credential(clock).get_token(VAULT)

    @pytest.mark.parametrize(
        "document",
        [
            {"access_token": "leaked-secret"},
            {"expires_on": "1"},
            {"access_token": "leaked-secret", "expires_on": "soon"},
            ["not", "a", "dict"],
        ],
    )
    def test_answer_without_token_and_expiry_is_refused_without_echoing_it(self, endpoint, clock, document):
        endpoint.mock(return_value=httpx.Response(200, json=document))
        with pytest.raises(SecretsUnavailable, match="without a token and expiry") as raised:
            credential(clock).get_token(VAULT)
        assert "leaked-secret" not in str(raised.value)

    def test_failure_is_not_cached(self, endpoint, clock):
        endpoint.side_effect = [httpx.ConnectError("refused"), token_answer(expires_on=clock.now + 3600)]
        identity = credential(clock)
        with pytest.raises(SecretsUnavailable):
            identity.get_token(VAULT)
        assert identity.get_token(VAULT).token == "t-1"


class TestAsAzureCoreCredential:
    """The real ``SecretClient``'s challenge policy asks it for the challenge's scope."""

    def test_key_vault_client_reads_a_secret_with_its_token(self, endpoint):
        import responses
        from azure.core.pipeline.transport import RequestsTransport
        from azure.keyvault.secrets import SecretClient

        vault_url = f"https://kv-{uuid.uuid4().hex[:12]}.vault.azure.net"  # the SDK caches challenges per vault

        endpoint.mock(return_value=token_answer("kv-token", expires_on=time.time() + 3600))
        challenge = (
            'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
            f'resource="{VAULT}"'
        )

        def vault(request):
            if request.headers.get("Authorization") != "Bearer kv-token":
                return 401, {"WWW-Authenticate": challenge}, json.dumps({"error": {"code": "Unauthorized"}})
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"value": "s3cret", "id": f"{vault_url}/secrets/name/0123", "attributes": {}}),
            )

        with responses.RequestsMock() as mock:
            mock.add_callback(responses.GET, re.compile(re.escape(vault_url) + r"/secrets/name.*"), callback=vault)
            client = SecretClient(
                vault_url,
                AppServiceManagedIdentity(ENDPOINT, identity_header=HEADER, client_id=CLIENT_ID),
                transport=RequestsTransport(),
                retry_total=0,
            )
            assert client.get_secret("name").value == "s3cret"
        assert endpoint.calls.last.request.url.params["resource"] == VAULT

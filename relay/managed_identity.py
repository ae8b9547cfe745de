"""The Function App's managed identity without azure-identity: one GET to the local identity endpoint.

In a Function App (or App Service app) with a managed identity the platform sets
``IDENTITY_ENDPOINT`` (a plain-HTTP URL on the instance) and ``IDENTITY_HEADER``. A token is
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=<id>]`` with the
header ``X-IDENTITY-HEADER: {IDENTITY_HEADER}``; the answer is ``{"access_token", "expires_on"
(unix seconds, as a string), "resource", "token_type"}``, and an error is a non-200 answer with
``{"statusCode", "message"}``. That is the App Service managed-identity protocol as azure-identity
(through MSAL) speaks it; ``client_id`` picks a user-assigned identity.

Importing azure-identity costs a cold instance about 40 ms (it loads msal, PyJWT and
cryptography) for this one request, so the relay makes it itself where the endpoint exists and
keeps ``DefaultAzureCredential`` for local development (``relay.composition``).
``AppServiceManagedIdentity`` satisfies azure-core's ``TokenCredential`` protocol, which the
Key Vault and Tables clients' challenge policies call.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from azure.core.credentials import AccessToken

from relay.budgets import TOKEN_REFRESH_MARGIN_SECONDS
from relay.ports import SecretsUnavailable

API_VERSION = "2019-08-01"
# The endpoint is on the instance: a slow answer means it is unwell, not far away.
REQUEST_TIMEOUT = httpx.Timeout(4.0, connect=2.0)
RETRY_AFTER_SECONDS = 5


def _resource(scopes: tuple[str, ...]) -> str:
    """The v1 resource for one v2 scope (``https://vault.azure.net/.default`` -> ``https://vault.azure.net``)."""
    if len(scopes) != 1:
        raise ValueError(f"a managed-identity token is for exactly one scope, not {len(scopes)}")
    return scopes[0].removesuffix("/.default")


def plain_http_client() -> httpx.Client:
    """An HTTP client for the endpoint on the instance.

    The endpoint is plain HTTP, so the client needs no CA bundle (loading certifi's takes a cold
    process 15-20 ms on the bench machine). Its TLS context trusts no CA at all, so it would refuse a TLS peer rather
    than trust it unverified. Proxy settings from the environment are for outbound traffic and
    are ignored.
    """
    return httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), trust_env=False, timeout=REQUEST_TIMEOUT)


class AppServiceManagedIdentity:
    """Tokens from the App Service / Functions managed-identity endpoint, cached per resource.

    Args:
        endpoint: ``IDENTITY_ENDPOINT``.
        identity_header: ``IDENTITY_HEADER`` (a secret the platform rotates; never logged).
        client_id: the user-assigned identity to use (``AZURE_CLIENT_ID``); ``None`` for the
            system-assigned one.
        http: the client to send with (built on first use when not given).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        identity_header: str,
        client_id: str | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._header = identity_header
        self._client_id = client_id
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, AccessToken] = {}
        # One request in flight per resource; different resources are fetched side by side.
        self._resource_locks: dict[str, threading.Lock] = {}

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token for ``scopes`` (exactly one), from the cache unless it expires within 5 minutes.

        ``claims`` (a resource's claims challenge) bypasses the cache; ``tenant_id`` and
        ``enable_cae`` do not apply to a managed identity, whose tenant is fixed.

        Raises:
            SecretsUnavailable: the endpoint could not be reached, refused, or answered
                something that is not a token.
            ValueError: not exactly one scope.
        """
        resource = _resource(scopes)
        with self._lock:
            resource_lock = self._resource_locks.setdefault(resource, threading.Lock())
        with resource_lock:
            cached = self._tokens.get(resource)
            renew_at = cached.expires_on - TOKEN_REFRESH_MARGIN_SECONDS if cached is not None else 0
            if claims is None and cached is not None and self._clock() < renew_at:
                return cached
            token = self._request(resource)
            self._tokens[resource] = token
            return token

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = plain_http_client()
            return self._http

    def _request(self, resource: str) -> AccessToken:
        params = {"api-version": API_VERSION, "resource": resource}
        if self._client_id:
            params["client_id"] = self._client_id
        try:
            response = self._client().get(
                self._endpoint, params=params, headers={"X-IDENTITY-HEADER": self._header}, timeout=REQUEST_TIMEOUT
            )
        except httpx.TransportError as exc:
            raise SecretsUnavailable(
                f"the managed-identity endpoint is unreachable ({type(exc).__name__})", retry_after=RETRY_AFTER_SECONDS
            ) from None
        document = _json_object(response)
        if response.status_code != 200:
            message = document.get("message") or document.get("error_description")
            reason = f": {str(message)[:200]}" if message else ""
            raise SecretsUnavailable(
                f"the managed-identity endpoint answered HTTP {response.status_code} for resource {resource!r}{reason}",
                retry_after=RETRY_AFTER_SECONDS,
            )
        token, expires_on = document.get("access_token"), document.get("expires_on")
        try:
            expiry = int(str(expires_on))
        except ValueError:
            expiry = 0
        if not isinstance(token, str) or not token or expiry <= 0:
            # Never echo the document: it may hold a token.
            raise SecretsUnavailable(
                f"the managed-identity endpoint answered HTTP 200 without a token and expiry for resource {resource!r}",
                retry_after=RETRY_AFTER_SECONDS,
            )
        return AccessToken(token, expiry)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}

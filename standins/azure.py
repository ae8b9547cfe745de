"""Loopback stand-ins for Key Vault (HTTPS) and the App Service managed-identity endpoint.

They behave like the services where ``azure-keyvault-secrets`` and ``azure-identity`` depend
on them, so the real SDK code runs unmodified:

* Key Vault: ``GET /secrets/<name>[/<version>]?api-version=...`` without a bearer token gets
  the 401 challenge (``WWW-Authenticate: Bearer authorization=..., resource=...``); with the
  token the identity stand-in issued for that resource it answers ``{"value", "id",
  "attributes"}``; an unknown name gets 404 ``SecretNotFound``; with ``rbac_denied`` (the
  identity holds no data-plane role on the vault) every read gets 403 ``ForbiddenByRbac``.
* Identity (App Service / Functions, ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``): ``GET
  <endpoint>?api-version=2019-08-01&resource=<r>[&client_id=<id>]`` with ``X-IDENTITY-HEADER``
  answers ``{"access_token", "expires_on", "resource", "token_type", "client_id"}``
  (``expires_on`` is unix seconds as a string, as App Service sends it). ``client_id`` picks the
  app's user-assigned identity (``USER_ASSIGNED_CLIENT_ID``, as the template's
  ``AZURE_CLIENT_ID`` does); without it the system-assigned one answers. An identity the app
  does not have, a wrong header or a missing parameter gets an error status with the
  protocol's ``{"statusCode", "message"}`` body.

The vault is reached as ``https://127.0.0.1:<port>``. The SDK refuses a challenge whose
resource domain is not a suffix of the vault host (``_validate_challenge_resource``: the host
must end with ``"." + resource domain``); ``localhost`` has no dot and ``*.localhost`` does not
resolve here, so the stand-in names the resource ``https://0.0.1:<port>``: the same suffix
relation as ``<name>.vault.azure.net`` / ``https://vault.azure.net``, verification left on.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from standins.http import StandInHandler
from standins.tls import LoopbackTLS, ThreadingTLSServer

TENANT_ID = "00000000-0000-0000-0000-0000000000b1"
IDENTITY_HEADER = "bench-identity-header"
USER_ASSIGNED_CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
SYSTEM_ASSIGNED_CLIENT_ID = "00000000-0000-0000-0000-0000000000c0"


def _serve(server: ThreadingHTTPServer, name: str) -> None:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()


@dataclass
class IdentityStandIn:
    """The App Service managed-identity endpoint; counts token requests per resource."""

    lifetime: int = 3600
    tokens: Counter[str] = field(default_factory=Counter)  # resource -> tokens issued

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def token_for(self, resource: str) -> str:
        return "bench-token-" + resource.rstrip("/").replace("/", "_").replace(":", "_")

    def start(self) -> IdentityStandIn:
        owner = self

        class Handler(StandInHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                    self._json(401, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"})
                    return
                resource = query.get("resource", "")
                if query.get("api-version") != "2019-08-01" or not resource:
                    self._json(400, {"statusCode": 400, "message": "api-version and resource are required"})
                    return
                client_id = query.get("client_id", SYSTEM_ASSIGNED_CLIENT_ID)
                if client_id not in (SYSTEM_ASSIGNED_CLIENT_ID, USER_ASSIGNED_CLIENT_ID):
                    self._json(
                        400,
                        {
                            "statusCode": 400,
                            "message": f"no identity with client_id {client_id} is assigned to this app",
                        },
                    )
                    return
                with owner._lock:
                    owner.tokens[resource] += 1
                self._json(
                    200,
                    {
                        "access_token": owner.token_for(resource),
                        "expires_on": str(int(time.time()) + owner.lifetime),
                        "resource": resource,
                        "token_type": "Bearer",
                        "client_id": client_id,
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        _serve(self._server, "identity-standin")
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class KeyVaultStandIn:
    """Key Vault's secrets GET with the bearer challenge; counts reads per secret name."""

    tls: LoopbackTLS
    identity: IdentityStandIn
    secrets: dict[str, str] = field(default_factory=dict)
    rbac_denied: bool = False
    reads: Counter[str] = field(default_factory=Counter)  # authorised GETs per secret name
    challenges: int = 0  # unauthenticated requests answered with the 401 challenge
    # Outage modes: every request waits ``delay`` s, then, with ``fail_status``, fails with it.
    delay: float = 0.0
    fail_status: int | None = None
    requests: int = 0
    max_in_flight: int = 0  # the most requests the vault was answering at once

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._in_flight = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def vault_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://0.0.1:{self.port}"  # see the module docstring

    def start(self) -> KeyVaultStandIn:
        owner = self

        class Handler(StandInHandler):
            def do_GET(self) -> None:
                owner._counted(self)

        server = ThreadingTLSServer(("127.0.0.1", 0), Handler, self.tls)
        self._server = server
        _serve(server, "keyvault-standin")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _counted(self, handler: StandInHandler) -> None:
        with self._lock:
            self.requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail_status is not None:
                handler._json(self.fail_status, {"error": {"code": "ServiceUnavailable", "message": "injected"}})
                return
            self._answer(handler)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, handler: StandInHandler) -> None:
        parts = urlsplit(handler.path)
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) not in (2, 3) or segments[0] != "secrets" or "api-version=" not in parts.query:
            handler._json(404, {"error": {"code": "NotFound", "message": f"no route for {parts.path}"}})
            return
        expected = "Bearer " + self.identity.token_for(self.resource)
        if handler.headers.get("Authorization") != expected:
            with self._lock:
                self.challenges += 1
            challenge = (
                f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="{self.resource}"'
            )
            handler._json(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer"}},
                {"WWW-Authenticate": challenge},
            )
            return
        name = segments[1]
        if self.rbac_denied:
            message = (
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments "
                "or role definitions were changed recently, please observe propagation time.\r\n"
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"
            )
            handler._json(
                403, {"error": {"code": "Forbidden", "message": message, "innererror": {"code": "ForbiddenByRbac"}}}
            )
            return
        with self._lock:
            self.reads[name] += 1
        value = self.secrets.get(name)
        if value is None:
            handler._json(
                404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found"}}
            )
            return
        version = "0123456789abcdef0123456789abcdef"
        handler._json(
            200,
            {
                "value": value,
                "id": f"{self.vault_url}/secrets/{name}/{version}",
                "attributes": {
                    "enabled": True,
                    "created": 1764300000,
                    "updated": 1764300000,
                    "recoveryLevel": "Recoverable",
                },
            },
        )

"""How the relay authenticates to Azure DevOps: an Entra token for the app's managed identity
(the default, no PAT anywhere), or, opted into with ``DEVOPS_AUTH=pat``, a PAT from Key Vault."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from relay.budgets import TOKEN_REFRESH_MARGIN_SECONDS
from relay.ports import SecretsUnavailable

AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
PAT_WARNING = (
    "DEVOPS_AUTH=pat: authenticating to Azure DevOps with a personal access token. Azure DevOps is "
    "retiring PATs (global PATs cannot be created since March 2026 and stop working on 1 December 2026; "
    "an organisation may forbid creating any PAT): switch to DEVOPS_AUTH=managed-identity (docs/deploy.md, step 3)"
)
log = logging.getLogger("relay.devops")


class DevOpsAuth(Protocol):
    """Produces the ``Authorization`` header; ``invalidate`` drops anything cached."""

    def authorization(self) -> str: ...

    def invalidate(self) -> None: ...


class PatAuth:
    """Basic auth with an empty user name and the PAT, which comes from ``pat_provider``
    (the secret cache), so a rotated PAT is picked up after ``invalidate``.

    The first use logs ``PAT_WARNING`` once: a PAT is an explicit opt-in on borrowed time.
    """

    def __init__(self, pat_provider: Callable[[], str], invalidate_pat: Callable[[], None]) -> None:
        self._pat = pat_provider
        self._invalidate = invalidate_pat
        self._warned = threading.Event()

    def authorization(self) -> str:
        if not self._warned.is_set():
            self._warned.set()  # a race may log it twice; never on every call
            log.warning(PAT_WARNING)
        token = base64.b64encode(f":{self._pat()}".encode()).decode("ascii")
        return f"Basic {token}"

    def invalidate(self) -> None:
        self._invalidate()


class AccessToken(Protocol):
    token: str
    expires_on: int


class TokenCredential(Protocol):
    """The part of ``azure.core.credentials.TokenCredential`` the relay uses."""

    def get_token(self, *scopes: str) -> AccessToken: ...


class EntraTokenAuth:
    """Bearer tokens for the managed identity, cached until five minutes before expiry."""

    def __init__(self, credential: TokenCredential, *, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = threading.Lock()  # concurrent fan-out must not fetch one token per thread
        self.acquisitions = 0

    def authorization(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_on - TOKEN_REFRESH_MARGIN_SECONDS:
                self._acquire()
            return f"Bearer {self._token}"

    def _acquire(self) -> None:
        try:
            token = self._credential.get_token(AZURE_DEVOPS_SCOPE)
        except Exception as exc:  # azure-identity raises several unrelated types
            raise SecretsUnavailable(
                f"could not get an Entra token for Azure DevOps from the managed identity: {type(exc).__name__}"
            ) from exc
        self.acquisitions += 1
        self._token, self._expires_on = token.token, float(token.expires_on)

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

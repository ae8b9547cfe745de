"""What the first answer needs and no request decides, started in the background at once.

A cold instance's first answer otherwise waits for one round trip after another: the vault's
challenge, the identity token, the webhook secret; after the claim, the PAT; then a new TLS
connection to Azure DevOps. ``Prefetch.start()`` (called once, when the process-wide relay is
built) starts the managed-identity tokens and the DevOps connection, so they overlap the webhook
secret's read (which the request starts itself), and has the PAT read right behind that read, on
its vault connection, while the request verifies and claims.

A task's failure is dropped here: the request that needs the value meets it again and reports
it, as it would have without the prefetch. Nothing here is logged above DEBUG, and never a value.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from relay.secrets import RelaySecrets

log = logging.getLogger("relay.prefetch")
# The audience the Tables client asks the identity for (azure-data-tables' STORAGE_OAUTH_SCOPE).
STORAGE_SCOPE = "https://storage.azure.com/.default"
CONNECT_TIMEOUT_SECONDS = 5.0


def key_vault_scope(vault_url: str) -> str:
    """The scope Key Vault's challenge will name for ``vault_url``: its parent domain.

    ``https://<name>.vault.azure.net`` challenges for ``https://vault.azure.net`` (the SDK only
    accepts a challenge whose domain ends the vault's host), so the token can be asked for
    before the challenge arrives. A wrong guess costs one unused token, never an error.
    """
    parts = urlsplit(vault_url)
    parent = (parts.hostname or "").partition(".")[2]
    port = f":{parts.port}" if parts.port else ""
    return f"https://{parent}{port}/.default"


def _in_background(task: Callable[[], object], what: str) -> None:
    def run() -> None:
        try:
            task()
        except Exception as exc:  # the request that needs the value meets (and reports) it again
            log.debug("prefetch of %s failed (%s)", what, type(exc).__name__)

    threading.Thread(target=run, daemon=True, name=f"relay-prefetch-{what}").start()


@dataclass(frozen=True)
class Prefetch:
    """The tasks to start; see the module docstring.

    Args:
        devops_pat: read the Azure DevOps PAT (DevOps auth by PAT).
        credential: the managed identity (``relay.managed_identity``) to ask for
            ``token_scopes``, or ``None``.
        http: the Azure DevOps client's pool, to open its connection; ``None`` in a dry run.
    """

    secrets: RelaySecrets
    devops_pat: bool
    credential: Any
    token_scopes: tuple[str, ...]
    http: httpx.Client | None
    devops_org_url: str

    def start(self) -> None:
        """Start every task on a thread of its own; returns at once, never raises."""
        if self.devops_pat:
            self.secrets.read_devops_pat_ahead()
        if self.credential is not None:
            for scope in self.token_scopes:
                _in_background(functools.partial(self.credential.get_token, scope), "token")
        if self.http is not None:
            _in_background(self._connect_devops, "devops-connection")

    def _connect_devops(self) -> None:
        """Open the pooled TLS connection the run POST will reuse, with a small anonymous GET.

        Any answer will do: the connection, not the answer, is what is kept. No credential is
        sent (Azure DevOps answers an anonymous caller with its sign-in page or a 401).
        """
        assert self.http is not None
        self.http.get(f"{self.devops_org_url.rstrip('/')}/_apis/connectionData", timeout=CONNECT_TIMEOUT_SECONDS)

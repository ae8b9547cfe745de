"""Secrets from Azure Key Vault through the app's identity (the ``SecretSource`` adapter).

The ``SecretClient`` is built on first use with bounded timeouts and retries: azure-core's
defaults (3 connect retries with backoff, 300 s timeouts) would hold a webhook far past its
deadline while the vault is down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.ports import SecretsUnavailable

# One vault read may take at most about (1 + retries) x (connect + read) seconds; it runs off
# the request thread (``relay.secrets``), which waits much less.
VAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 3,
    "read_timeout": 5,
}


def key_vault_source(vault_url: str, credential: Callable[[], Any]) -> KeyVaultSecretSource:
    """Secrets from ``vault_url`` read with ``credential()`` (built on first use)."""

    def client() -> Any:
        from azure.keyvault.secrets import SecretClient

        return SecretClient(vault_url=vault_url, credential=credential(), **VAULT_CLIENT_OPTIONS)

    return KeyVaultSecretSource(client)


class KeyVaultSecretSource:
    """Secrets from Azure Key Vault; the ``SecretClient`` is built on first use.

    Args:
        client_factory: returns an ``azure.keyvault.secrets.SecretClient`` (injected so
            tests can pass one wired to a fake transport).
    """

    description = "Key Vault"

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._client: Any = None

    def get(self, name: str) -> str | None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        if self._client is None:
            self._client = self._factory()
        try:
            value = self._client.get_secret(name).value
        except ResourceNotFoundError:
            return None
        except ClientAuthenticationError as exc:
            raise SecretsUnavailable(
                f"Key Vault: the managed identity could not authenticate ({type(exc).__name__})"
            ) from exc
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise SecretsUnavailable(
                    f"Key Vault denied reading secret {name!r}: grant the app's identity the "
                    "'Key Vault Secrets User' role on the vault"
                ) from exc
            raise SecretsUnavailable(f"Key Vault answered HTTP {exc.status_code}") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            # ServiceResponseError: a read timeout or a dropped connection, as transient as a refused one.
            raise SecretsUnavailable(f"Key Vault unreachable ({type(exc).__name__})") from exc
        return str(value) if value else None

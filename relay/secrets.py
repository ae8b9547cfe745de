"""Where the webhook secret(s) and the DevOps PAT come from, and how long they are kept.

In Azure: Key Vault through the app's managed identity (``KeyVaultSecretSource``). Locally:
the environment (``EnvironmentSecretSource``), with a warning. ``RelaySecrets`` caches values
for a TTL so a burst of deliveries costs one vault read per secret per TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from webhook.errors import ConfigurationError, SecretsUnavailable

log = logging.getLogger("relay.secrets")
ROTATION_REFRESH_INTERVAL_SECONDS = 30.0


class SecretSource(Protocol):
    """Reads one secret by name; ``None`` when it does not exist."""

    description: str

    def get(self, name: str) -> str | None: ...


class EnvironmentSecretSource:
    """Secrets from environment variables (local development only)."""

    description = "the environment"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        return self._environ.get(name) or None


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


class RelaySecrets:
    """The relay's secrets by role, cached for ``ttl`` seconds (thread-safe).

    Args:
        webhook_name / previous_name / pat_name: names in the source (Key Vault secret
            names, or environment variable names locally).
    """

    def __init__(
        self,
        source: SecretSource,
        *,
        webhook_name: str,
        previous_name: str | None,
        pat_name: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._webhook_name = webhook_name
        self._previous_name = previous_name
        self._pat_name = pat_name
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._last_rotation_refresh = float("-inf")
        self.reads = 0

    def _get(self, name: str) -> str | None:
        with self._lock:
            cached = self._cache.get(name)
            now = self._clock()
            if cached is not None and now - cached[1] < self._ttl:
                return cached[0]
            value = self._source.get(name)
            self.reads += 1
            self._cache[name] = (value, now)
            return value

    def _required(self, name: str, role: str) -> str:
        value = self._get(name)
        if not value:
            raise ConfigurationError(f"{role} secret {name!r} not found in {self._source.description}")
        return value

    def webhook_secrets(self) -> list[str]:
        """The current webhook secret, then the previous one when configured.

        Raises:
            ConfigurationError: the current secret does not exist.
            SecretsUnavailable: the source could not be read.
        """
        secrets = [self._required(self._webhook_name, "webhook")]
        if self._previous_name:
            previous = self._get(self._previous_name)
            if previous:
                secrets.append(previous)
        return secrets

    def refresh_webhook_secrets(self) -> bool:
        """Drop cached webhook secrets so the next read sees a rotation; at most once per 30 s.

        Returns:
            True when the cache was dropped (worth verifying again).
        """
        with self._lock:
            now = self._clock()
            if now - self._last_rotation_refresh < ROTATION_REFRESH_INTERVAL_SECONDS:
                return False
            self._last_rotation_refresh = now
            for name in (self._webhook_name, self._previous_name):
                if name:
                    self._cache.pop(name, None)
            return True

    def devops_pat(self) -> str:
        """The Azure DevOps PAT. Raises like ``webhook_secrets``."""
        return self._required(self._pat_name, "Azure DevOps PAT")

    def invalidate_devops_pat(self) -> None:
        with self._lock:
            self._cache.pop(self._pat_name, None)

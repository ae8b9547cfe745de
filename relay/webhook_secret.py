"""The webhook secret for tools (``mlflow-relay webhooks``): Key Vault when KEY_VAULT_URL is
set, else WEBHOOK_SECRET from the environment. Never printed."""

from __future__ import annotations

import os
from typing import Any

from relay.secrets import EnvironmentSecretSource, KeyVaultSecretSource, SecretSource
from webhook.errors import ConfigurationError


def read_webhook_secret() -> str:
    """Raises ``ConfigurationError`` when no secret is found."""
    vault_url = os.environ.get("KEY_VAULT_URL")
    source: SecretSource
    if vault_url:
        from relay.app import azure_credential

        def client() -> Any:
            from azure.keyvault.secrets import SecretClient

            return SecretClient(vault_url=vault_url, credential=azure_credential(os.environ.get("AZURE_CLIENT_ID")))

        source, name = KeyVaultSecretSource(client), os.environ.get("WEBHOOK_SECRET_NAME", "mlflow-webhook-secret")
    else:
        source, name = EnvironmentSecretSource(os.environ), "WEBHOOK_SECRET"
    secret = source.get(name)
    if not secret:
        raise ConfigurationError(f"webhook secret {name!r} not found in {source.description}")
    return secret

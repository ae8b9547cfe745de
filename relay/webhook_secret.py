"""The webhook secret for tools (``mlflow-relay webhooks``): Key Vault when KEY_VAULT_URL is
set, else WEBHOOK_SECRET from the environment. Never printed."""

from __future__ import annotations

import os

from relay.secrets import EnvironmentSecretSource, SecretSource
from webhook.errors import ConfigurationError


def read_webhook_secret() -> str:
    """Raises ``ConfigurationError`` when no secret is found."""
    vault_url = os.environ.get("KEY_VAULT_URL")
    source: SecretSource
    if vault_url:
        from relay.app import key_vault_source

        source = key_vault_source(vault_url, os.environ.get("AZURE_CLIENT_ID"))
        name = os.environ.get("WEBHOOK_SECRET_NAME", "mlflow-webhook-secret")
    else:
        source, name = EnvironmentSecretSource(os.environ), "WEBHOOK_SECRET"
    secret = source.get(name)
    if not secret:
        raise ConfigurationError(f"webhook secret {name!r} not found in {source.description}")
    return secret

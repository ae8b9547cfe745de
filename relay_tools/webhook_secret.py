"""The webhook secret for tools (``sign``, ``webhooks``, ``sync``), read the relay's way.

Key Vault when ``KEY_VAULT_URL`` is set (``WEBHOOK_SECRET_NAME``), else ``WEBHOOK_SECRET``
from the environment. Never printed.
"""

from __future__ import annotations

import logging
import os

from relay.settings import secret_settings_from_env
from relay_tools.tool_context import tool_secrets


def read_webhook_secret() -> str:
    """The current webhook secret.

    Raises:
        ConfigurationError: a secret setting is invalid or the secret does not exist.
        SecretsUnavailable: Key Vault could not be read.
    """
    secrets = tool_secrets(secret_settings_from_env(os.environ), ttl=0, previous=False)
    logging.getLogger("relay").debug("reading the webhook secret from %s", secrets.source_description)
    return secrets.webhook_secrets()[0]

"""The webhook secret for tools (``sign``, ``webhooks``, ``sync``), read the relay's way.

Key Vault when ``KEY_VAULT_URL`` is set (``WEBHOOK_SECRET_NAME``), else ``WEBHOOK_SECRET``
from the environment. Never printed.
"""

from __future__ import annotations

import logging
import os

from relay.composition import secret_source
from relay.secrets import RelaySecrets
from relay.settings import secret_settings_from_env


def read_webhook_secret() -> str:
    """The current webhook secret.

    Raises:
        ConfigurationError: a secret setting is invalid or the secret does not exist.
        SecretsUnavailable: Key Vault could not be read.
    """
    source, (webhook, _previous, pat) = secret_source(secret_settings_from_env(os.environ))
    # A person waits longer for a vault than a webhook sender does.
    secrets = RelaySecrets(source, webhook_name=webhook, previous_name=None, pat_name=pat, ttl=0, wait=30.0)
    logging.getLogger("relay").debug("reading the webhook secret from %s", source.description)
    return secrets.webhook_secrets()[0]

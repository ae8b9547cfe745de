"""What the operator commands share: who the operator is, the relay's storage, times.

The commands read the relay's own storage account with the operator's credentials
(``DefaultAzureCredential``: ``az login``) given ``AzureWebJobsStorage__accountName``, or with
an ``AzureWebJobsStorage`` connection string (Azurite locally), through the same builders the
relay uses (``relay.storage_clients``). Commands that only read (``deliveries list``/``show``,
``retries list``) need nothing else; the ones that start runs (``replay``, ``catch-up``) build the
whole relay from the environment, exactly as the app does.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from relay.composition import Relay, azure_credential, build_relay
from relay.delivery_log import DeliveryLogStore
from relay.settings import Settings, settings_from_env
from webhook.errors import ConfigurationError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Stand-ins for the two settings a read-only command does not use (it starts nothing).
_READ_ONLY_PLACEHOLDERS = {
    "DEVOPS_ORG_URL": "https://dev.azure.com/not-used-by-read-only-commands",
    "DEVOPS_PROJECT": "not-used",
}


def operator_identity(explicit: str | None = None, *, environ: Mapping[str, str] = os.environ) -> str:
    """Who is acting: ``--by``, else ``RELAY_OPERATOR``, else the Azure CLI's signed-in user, else ``USER``."""
    if explicit:
        return explicit
    if environ.get("RELAY_OPERATOR"):
        return environ["RELAY_OPERATOR"]
    az = shutil.which("az")
    if az:
        command = [az, "account", "show", "--query", "user.name", "-o", "tsv"]  # fixed: no outside input
        try:
            shown = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired):
            shown = None
        if shown is not None and shown.returncode == 0 and shown.stdout.strip():
            return shown.stdout.strip()
    return environ.get("USER") or environ.get("USERNAME") or getpass.getuser() or "unknown"


def storage_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """The relay's settings for a command that only reads its storage.

    Raises:
        ConfigurationError: no storage is configured, or a setting is invalid.
    """
    settings = settings_from_env({**_READ_ONLY_PLACEHOLDERS, **{k: v for k, v in environ.items() if v.strip()}})
    require_storage(settings)
    return settings


def require_storage(settings: Settings) -> None:
    if not settings.uses_storage:
        raise ConfigurationError(
            "no storage configured: set AzureWebJobsStorage__accountName=<the relay's storage account> (your "
            "az login is used) or AzureWebJobsStorage=<connection string>"
        )


def log_store(settings: Settings) -> DeliveryLogStore:
    """The delivery log table, read with the operator's credentials."""
    from relay.delivery_log_table import TableDeliveryLogStore
    from relay.storage_clients import table_service

    service = table_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
    return TableDeliveryLogStore(service, settings.delivery_log_table)


def operator_relay(environ: Mapping[str, str] = os.environ) -> Relay:
    """The whole relay built from the environment, for commands that start runs.

    Raises:
        ConfigurationError: a setting is missing or invalid, or there is no storage.
    """
    settings = settings_from_env(environ)
    require_storage(settings)
    return build_relay(settings)


def parse_since(text: str, *, now: float | None = None) -> float:
    """``2h``, ``30m``, ``7d``, ``90s``, or an ISO 8601 date/time (UTC unless it says). Raises ``ValueError``."""
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration (30m, 2h, 7d) or an ISO date/time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def short_time(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"

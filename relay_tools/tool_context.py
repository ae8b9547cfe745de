"""What the tools share with the relay: where it reads its rules, and its secrets read with a
person's patience (a vault may take seconds to answer a laptop; a webhook sender cannot wait)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from relay.composition import secret_source
from relay.secrets import RelaySecrets
from relay.settings import APP_ROOT, SecretSettings

TOOL_SECRET_WAIT_SECONDS = 30.0


def routes_path(environ: Mapping[str, str], explicit: str | None = None) -> Path:
    """The rules file: ``explicit``, else ``ROUTES_FILE`` (relative to the app root, as the relay
    reads it), else the shipped ``routes.yaml``."""
    if explicit:
        return Path(explicit)
    configured = (environ.get("ROUTES_FILE") or "").strip()
    if not configured:
        return APP_ROOT / "routes.yaml"
    path = Path(configured)
    return path if path.is_absolute() else APP_ROOT / path


def tool_secrets(settings: SecretSettings, *, ttl: float | None = None, previous: bool = True) -> RelaySecrets:
    """The relay's secrets from where the relay reads them (``relay.composition.secret_source``);
    ``previous=False`` leaves out the rotation's previous webhook secret."""
    source, (webhook, previous_name, pat) = secret_source(settings)
    return RelaySecrets(
        source,
        webhook_name=webhook,
        previous_name=previous_name if previous else None,
        pat_name=pat,
        ttl=settings.secret_cache_seconds if ttl is None else ttl,
        wait=TOOL_SECRET_WAIT_SECONDS,
    )

"""Catch-up wired to the relay: the registries' readers with their sign-in, and the timer's body.

MLflow is read anonymously, or with a bearer token kept in Key Vault (``MLFLOW_TOKEN_SECRET_NAME``);
Databricks and Unity Catalog with an Entra token for the Databricks resource, obtained by the
app's identity (or the operator's, from the CLI). The timer function runs every registry of
``CATCH_UP_REGISTRIES`` and is a no-op, with one INFO line, when that setting is empty.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from relay.catch_up import CatchUp, CatchUpReport
from relay.registries import DATABRICKS_SCOPE, AuthHeaders, RegistryReader, RegistryUnavailable, bearer, no_auth
from relay.registry_specs import RegistrySpec, parse_registries

if TYPE_CHECKING:
    from relay.composition import Relay

log = logging.getLogger("relay")


def catch_up_for(relay: Relay) -> CatchUp:
    """Raises ``ConfigurationError`` without a delivery log (it is always built by ``build_relay``)."""
    from webhook.errors import ConfigurationError

    if relay.log is None:
        raise ConfigurationError("catch-up needs the delivery log's state marks; build the relay with build_relay")
    return CatchUp(
        service=relay.service,
        ledger=relay.ledger,
        marks=relay.log.marks,
        log=relay.log.log,
        ledger_retention=relay.settings.idempotency_retention_days * 86400,
    )


def entra_token(credential_factory: Callable[[], Any]) -> Callable[[], str]:
    """An Entra token for the Databricks resource; failures become ``RegistryUnavailable``."""

    def token() -> str:
        try:
            return str(credential_factory().get_token(DATABRICKS_SCOPE).token)
        except Exception as exc:  # azure-identity raises several unrelated types
            raise RegistryUnavailable(f"no Entra token for Databricks ({type(exc).__name__})", retry_after=60) from None

    return token


def registry_auth(
    spec: RegistrySpec, *, credential_factory: Callable[[], Any], mlflow_token: Callable[[], str | None]
) -> AuthHeaders:
    if spec.kind in ("databricks", "unity-catalog"):
        return bearer(entra_token(credential_factory))

    def mlflow_headers() -> dict[str, str]:
        token = mlflow_token()
        return {"Authorization": f"Bearer {token}"} if token else no_auth()

    return mlflow_headers


def relay_readers(relay: Relay, specs: Sequence[RegistrySpec], http: httpx.Client) -> list[RegistryReader]:
    """Readers signed in as the relay: its identity, its Key Vault."""
    from relay.composition import azure_credential, secret_source
    from relay.registries import registry_reader

    settings = relay.settings

    @functools.cache  # once per catch-up run: one vault read, however many models are read
    def mlflow_token() -> str | None:
        if not settings.mlflow_token_secret_name:
            return None
        source, _ = secret_source(settings)
        return source.get(settings.mlflow_token_secret_name)

    def credential() -> Any:
        return azure_credential(settings.azure_client_id)

    return [
        registry_reader(spec, http, auth=registry_auth(spec, credential_factory=credential, mlflow_token=mlflow_token))
        for spec in specs
    ]


def run_catch_up(relay: Relay, readers: Sequence[RegistryReader], *, dry_run: bool = False) -> list[CatchUpReport]:
    catch_up = catch_up_for(relay)
    reports = [catch_up.run(reader, dry_run=dry_run) for reader in readers]
    if relay.log is not None and not relay.log.log.flush(timeout=15):
        log.warning("catch-up: the delivery log did not finish writing within 15 s")
    return reports


def handle_timer(_timer: object) -> None:
    """The timer function's body: every configured registry, once. Never raises for a registry.

    Raises:
        ConfigurationError: a setting is missing or invalid (the relay cannot be built).
    """
    from relay.composition import current_relay

    relay = current_relay()
    specs = parse_registries(relay.settings.catch_up_registries)
    if not specs:
        log.info("relay catch-up: CATCH_UP_REGISTRIES is empty, nothing to do")
        return
    with httpx.Client(headers={"User-Agent": "mlflow-devops-relay/catch-up"}) as http:
        reports = run_catch_up(relay, relay_readers(relay, specs, http))
    for report in reports:
        log.info(
            "relay catch-up of %s: %d started, %d actions%s",
            report.registry,
            len(report.started),
            len(report.actions),
            f", error: {report.error}" if report.error else "",
        )

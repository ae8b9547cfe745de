"""Composition root: builds the relay from settings, once per process, on first use.

Heavy SDKs (azure-identity, Key Vault, Storage) are imported here, lazily, so importing
``function_app`` stays cheap and never touches the network.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from devops.auth import DevOpsAuth, EntraTokenAuth, PatAuth
from devops.client import AzureDevOpsClient, DryRunStarter, PipelineStarter
from devops.retry import RetryPolicy
from relay.ledger import DeliveryLedger, InMemoryLedger, LedgerTiming
from relay.names import RETRY_QUEUE_NAME
from relay.retry_worker import RetryWorker
from relay.secrets import EnvironmentSecretSource, KeyVaultSecretSource, RelaySecrets, SecretSource
from relay.service import RelayService
from relay.settings import Settings, load_settings, reset_settings
from webhook.errors import ConfigurationError
from webhook.routing import RouteRules, parse_rules

if TYPE_CHECKING:
    from relay.storage import StorageQueueRetry

log = logging.getLogger("relay")


def load_rules_file(path: Path) -> RouteRules:
    """Read and validate the rules file.

    Raises:
        ConfigurationError: the file is missing or invalid (naming the rule and field).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"routing rules file {str(path)!r} cannot be read ({exc.strerror}); set ROUTES_FILE"
        ) from None
    return parse_rules(text, origin=path.name)


@cache
def azure_credential(client_id: str | None) -> Any:
    """The app's identity: managed identity in Azure, developer credentials locally."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_interactive_browser_credential=True)


def key_vault_source(vault_url: str, client_id: str | None) -> KeyVaultSecretSource:
    """Secrets from ``vault_url`` through the app's identity; the client is built on first use."""

    def client() -> Any:
        from azure.keyvault.secrets import SecretClient

        # Bounded like the storage clients: azure-core's defaults (3 connect retries with backoff,
        # 300 s timeouts) would hold a webhook far past its deadline while the vault is down.
        return SecretClient(vault_url=vault_url, credential=azure_credential(client_id),
                            retry_total=2, retry_backoff_factor=0.2, connection_timeout=5, read_timeout=10)  # fmt: skip

    return KeyVaultSecretSource(client)


def build_secrets(settings: Settings) -> RelaySecrets:
    source: SecretSource
    if settings.key_vault_url:
        source = key_vault_source(settings.key_vault_url, settings.azure_client_id)
        names = (settings.webhook_secret_name, settings.webhook_previous_secret_name, settings.devops_pat_secret_name)
    else:
        log.warning(
            "KEY_VAULT_URL is not set: reading WEBHOOK_SECRET/DEVOPS_PAT from the environment (local development only)"
        )
        source = EnvironmentSecretSource(os.environ)
        names = ("WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET", "DEVOPS_PAT")
    return RelaySecrets(
        source, webhook_name=names[0], previous_name=names[1], pat_name=names[2], ttl=settings.secret_cache_seconds
    )


def build_devops_auth(settings: Settings, secrets: RelaySecrets) -> DevOpsAuth:
    if settings.devops_auth == "managed-identity":
        return EntraTokenAuth(azure_credential(settings.azure_client_id))
    return PatAuth(secrets.devops_pat, secrets.invalidate_devops_pat)


def build_http_client(settings: Settings) -> httpx.Client:
    """One pooled client for the process; ``DEVOPS_CA_BUNDLE`` trusts a private CA (DevOps Server)."""
    verify: Any = True
    if settings.devops_ca_bundle:
        import ssl

        verify = ssl.create_default_context(cafile=settings.devops_ca_bundle)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    return httpx.Client(verify=verify, limits=limits, headers={"User-Agent": "mlflow-devops-relay/0.1"})


def build_storage(settings: Settings) -> tuple[DeliveryLedger, StorageQueueRetry | None]:
    timing = LedgerTiming(lease=max(60.0, settings.devops_deadline_seconds * 3),
                          retention=settings.idempotency_retention_days * 86400)  # fmt: skip
    if not settings.uses_storage:
        log.warning(
            "no AzureWebJobsStorage configured: in-memory delivery ledger, no durable retry (local development only)"
        )
        return InMemoryLedger(timing), None
    from relay.storage import StorageQueueRetry, TableLedger, storage_clients

    tables, queues = storage_clients(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
    return TableLedger(tables, settings.idempotency_table, timing), StorageQueueRetry(queues, RETRY_QUEUE_NAME)


@dataclass(frozen=True)
class Relay:
    """The process-wide pieces: the HTTP service and, with storage, the retry worker."""

    service: RelayService
    worker: RetryWorker | None


def build_relay(settings: Settings) -> Relay:
    """Wire the relay from settings (no network I/O happens here)."""
    secrets = build_secrets(settings)
    starter: PipelineStarter
    if settings.dry_run:
        starter = DryRunStarter()
    else:
        starter = AzureDevOpsClient(
            org_url=settings.devops_org_url,
            auth=build_devops_auth(settings, secrets),
            http=build_http_client(settings),
            policy=RetryPolicy(deadline=settings.devops_deadline_seconds),
        )
    ledger, retry_queue = build_storage(settings)
    rules_path = settings.routes_file
    service = RelayService(
        secrets=secrets,
        rules=cache(lambda: load_rules_file(rules_path)),
        starter=starter,
        ledger=ledger,
        retry_queue=retry_queue,
        default_project=settings.devops_project,
        max_age=settings.webhook_max_age_seconds,
        dry_run=settings.dry_run,
    )
    worker = None
    if retry_queue is not None:
        worker = RetryWorker(starter=starter, ledger=ledger, queue=retry_queue, poison=retry_queue,
                             max_attempts=settings.retry_max_attempts)  # fmt: skip
    return Relay(service=service, worker=worker)


_lock = threading.Lock()
_relay: Relay | None = None


def current_relay() -> Relay:
    """The process-wide relay, built on first use.

    Raises:
        ConfigurationError: a setting is missing or invalid.
    """
    global _relay
    with _lock:
        if _relay is None:
            _relay = build_relay(load_settings())
        return _relay


def reset_relay() -> None:
    """Forget the process-wide relay and settings (tests; the local server)."""
    global _relay
    with _lock:
        _relay = None
    reset_settings()

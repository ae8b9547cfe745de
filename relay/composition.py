"""Composition root: builds the relay from settings, once per process, on first use.

Heavy SDKs (Key Vault, Storage) are imported here lazily, the queue SDK only when a run is
queued or a retry message arrives, and azure-identity only where the platform's identity
endpoint is missing (local development), so importing ``function_app`` stays cheap and never
touches the network. Once built, the process-wide relay starts what the first answer will
need and no request decides (``Prefetch``). The tools (``relay_tools``) build what they need
with the same functions.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from devops.auth import AZURE_DEVOPS_SCOPE, DevOpsAuth, EntraTokenAuth, PatAuth
from devops.client import AzureDevOpsClient, DryRunStarter
from devops.retry import RetryPolicy
from relay.delivery_log_wiring import DeliveryLogParts, build_delivery_log_parts
from relay.ledger import InMemoryLedger, LedgerTiming
from relay.names import RETRY_QUEUE_NAME
from relay.ports import DeliveryLedger, PipelineStarter, SecretSource
from relay.prefetch import STORAGE_SCOPE, Prefetch, key_vault_scope
from relay.secrets import EnvironmentSecretSource, RelaySecrets
from relay.service import DeliveryVerifier, RelayService
from relay.settings import SecretSettings, Settings, load_settings, reset_settings, secret_settings_from_env
from webhook.errors import ConfigurationError
from webhook.rules import RouteRules, parse_rules

if TYPE_CHECKING:
    from relay.retry_queue import StorageRetryQueue
    from relay.retry_worker import RetryWorker

log = logging.getLogger("relay")
USER_AGENT = "mlflow-devops-relay/0.2"


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


def platform_identity_endpoint() -> tuple[str, str] | None:
    """``(IDENTITY_ENDPOINT, IDENTITY_HEADER)`` where Functions / App Service provide them."""
    endpoint, header = os.environ.get("IDENTITY_ENDPOINT"), os.environ.get("IDENTITY_HEADER")
    # With a server thumbprint the same variables name Service Fabric's endpoint: another protocol.
    if endpoint and header and not os.environ.get("IDENTITY_SERVER_THUMBPRINT"):
        return endpoint, header
    return None


@cache
def azure_credential(client_id: str | None) -> Any:
    """The app's identity: the platform's managed-identity endpoint in Azure, developer credentials locally.

    Functions and App Service set ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``; the relay then
    asks that endpoint itself (``relay.managed_identity``) and never imports azure-identity.
    Elsewhere ``DefaultAzureCredential`` (Azure CLI, VS Code, environment, ...) is imported.
    """
    platform = platform_identity_endpoint()
    if platform is not None:
        from relay.managed_identity import AppServiceManagedIdentity

        return AppServiceManagedIdentity(platform[0], identity_header=platform[1], client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_interactive_browser_credential=True)


def secret_source(settings: SecretSettings) -> tuple[SecretSource, tuple[str, str | None, str]]:
    """Where the secrets come from, and their names there (webhook, previous, PAT)."""
    if settings.key_vault_url:
        from relay.keyvault import key_vault_source

        source = key_vault_source(settings.key_vault_url, lambda: azure_credential(settings.azure_client_id))
        return source, (
            settings.webhook_secret_name,
            settings.webhook_previous_secret_name,
            settings.devops_pat_secret_name,
        )
    return EnvironmentSecretSource(os.environ), ("WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET", "DEVOPS_PAT")


def build_secrets(settings: SecretSettings) -> RelaySecrets:
    source, (webhook, previous, pat) = secret_source(settings)
    if not settings.key_vault_url:
        log.warning(
            "KEY_VAULT_URL is not set: reading WEBHOOK_SECRET/DEVOPS_PAT from the environment (local development only)"
        )
    return RelaySecrets(
        source, webhook_name=webhook, previous_name=previous, pat_name=pat, ttl=settings.secret_cache_seconds
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
    return httpx.Client(verify=verify, limits=limits, headers={"User-Agent": USER_AGENT})


def build_devops_client(
    settings: Settings, secrets: RelaySecrets, *, http: httpx.Client | None = None
) -> AzureDevOpsClient:
    return AzureDevOpsClient(
        org_url=settings.devops_org_url,
        auth=build_devops_auth(settings, secrets),
        http=http or build_http_client(settings),
        policy=RetryPolicy(deadline=settings.devops_deadline_seconds),
    )


def build_ledger(settings: Settings) -> DeliveryLedger:
    timing = LedgerTiming(lease=settings.budgets.lease, retention=settings.idempotency_retention_days * 86400)
    if not settings.uses_storage:
        log.warning(
            "no AzureWebJobsStorage configured: in-memory delivery ledger, no durable retry (local development only)"
        )
        return InMemoryLedger(timing)
    from relay.storage_clients import table_service
    from relay.table_ledger import TableLedger

    service = table_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
    return TableLedger(service, settings.idempotency_table, timing)


def build_retry_queue(settings: Settings) -> StorageRetryQueue:
    """The retry and poison queues (imports the queue SDK: only when a run is queued)."""
    from relay.retry_queue import StorageRetryQueue
    from relay.storage_clients import queue_service

    service = queue_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
    return StorageRetryQueue(service, RETRY_QUEUE_NAME)


class QueueOnFirstUse:
    """The retry queue, built when first called: the first answer never imports the queue SDK."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: StorageRetryQueue | None = None
        self._lock = threading.Lock()

    def __call__(self) -> StorageRetryQueue:
        with self._lock:
            if self._queue is None:
                self._queue = build_retry_queue(self._settings)
            return self._queue


def build_prefetch(settings: Settings, secrets: RelaySecrets, http: httpx.Client | None) -> Prefetch:
    """What to start ahead of the first answer, for these settings (``relay.prefetch``)."""
    scopes = []
    if settings.key_vault_url:
        scopes.append(key_vault_scope(settings.key_vault_url))
    if settings.uses_storage and not settings.storage_connection_string:
        scopes.append(STORAGE_SCOPE)
    if http is not None and settings.devops_auth == "managed-identity":
        scopes.append(AZURE_DEVOPS_SCOPE)
    # Tokens ahead from the platform's endpoint only: developer credentials may run a CLI.
    credential = azure_credential(settings.azure_client_id) if scopes and platform_identity_endpoint() else None
    return Prefetch(
        secrets=secrets,
        devops_pat=http is not None and settings.devops_auth == "pat",
        credential=credential,
        token_scopes=tuple(scopes),
        http=http,
        devops_org_url=settings.devops_org_url,
    )


@dataclass(frozen=True)
class Relay:
    """The process-wide pieces: the HTTP service, and what the retry worker is made of."""

    settings: Settings
    service: RelayService
    starter: PipelineStarter
    ledger: DeliveryLedger
    retry_queue: QueueOnFirstUse | None
    log: DeliveryLogParts | None = None  # the delivery log, state marks and gate (issue 17)
    prefetch: Prefetch | None = None

    @cached_property
    def worker(self) -> RetryWorker | None:
        """The retry worker, built once per process (not per message), or ``None`` without storage."""
        if self.retry_queue is None:
            return None
        from relay.logged_retry_worker import LoggedRetryWorker  # the HTTP path never needs it

        queue, settings = self.retry_queue(), self.settings
        return LoggedRetryWorker(
            starter=self.starter,
            ledger=self.ledger,
            queue=queue,
            poison=queue,
            max_attempts=settings.retry_max_attempts,
            deadline=settings.devops_deadline_seconds,
            base_delay=settings.retry_base_delay_seconds,
            max_dequeue_count=settings.host_queues.max_dequeue_count,
            delivery_log=self.log.log if self.log else None,
        )


def build_relay(settings: Settings, *, secrets: RelaySecrets | None = None) -> Relay:
    """Wire the relay from settings; ``secrets`` may be shared (no network I/O happens here;
    ``Relay.prefetch.start()`` starts some)."""
    secrets = secrets or build_secrets(settings)
    http = None if settings.dry_run else build_http_client(settings)
    starter: PipelineStarter = DryRunStarter() if http is None else build_devops_client(settings, secrets, http=http)
    ledger = build_ledger(settings)
    retry_queue = QueueOnFirstUse(settings) if settings.uses_storage else None
    log = build_delivery_log_parts(
        settings, ledger, credential_factory=lambda: azure_credential(settings.azure_client_id)
    )
    rules_path = settings.routes_file
    service = RelayService(
        secrets=secrets,
        rules=cache(lambda: load_rules_file(rules_path)),
        starter=starter,
        ledger=ledger,
        retry_queue=retry_queue,
        retry_base_delay=settings.retry_base_delay_seconds,
        default_project=settings.devops_project,
        max_age=settings.webhook_max_age_seconds,
        deadline=settings.devops_deadline_seconds,
        dry_run=settings.dry_run,
        delivery_log=log.log,
        state_gate=log.gate,
    )
    return Relay(
        settings=settings,
        service=service,
        starter=starter,
        ledger=ledger,
        retry_queue=retry_queue,
        log=log,
        prefetch=build_prefetch(settings, secrets, http),
    )


_lock = threading.Lock()
_relay: Relay | None = None
_verifier_lock = threading.Lock()
_verifier: DeliveryVerifier | None = None


def current_verifier() -> DeliveryVerifier:
    """The process-wide signature verifier, built from the secret settings alone on first use.

    Raises:
        ConfigurationError: a secret setting is invalid.
    """
    global _verifier
    with _verifier_lock:
        if _verifier is None:
            settings = secret_settings_from_env(os.environ)
            _verifier = DeliveryVerifier(build_secrets(settings), max_age=settings.webhook_max_age_seconds)
        return _verifier


def current_relay() -> Relay:
    """The process-wide relay, built on first use; it shares the verifier's secrets.

    Raises:
        ConfigurationError: a setting is missing or invalid.
    """
    global _relay
    if _relay is not None:  # every request after the first: no lock
        return _relay
    with _lock:
        if _relay is None:
            _relay = build_relay(load_settings(), secrets=current_verifier().secrets)
            if _relay.prefetch is not None:
                _relay.prefetch.start()
        return _relay


def built_relay() -> Relay | None:
    """The process-wide relay if it is built already (never builds it)."""
    return _relay


def reset_relay() -> None:
    """Forget the process-wide relay, verifier and settings (tests; the local server)."""
    global _relay, _verifier
    with _lock, _verifier_lock:
        _relay = None
        _verifier = None
    reset_settings()

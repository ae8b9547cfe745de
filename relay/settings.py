"""Typed, fail-fast settings read from the environment (Function App settings).

Loaded lazily by ``load_settings()`` and cached, so importing ``function_app`` never fails
for a missing setting; the first request that needs them gets a 500 naming the setting.
No secret value belongs here in production: ``WEBHOOK_SECRET``/``DEVOPS_PAT`` are a local
development fallback used only when ``KEY_VAULT_URL`` is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.budgets import HostQueueSettings, TimeBudgets, derive_budgets, host_queue_settings
from webhook.errors import ConfigurationError

APP_ROOT = Path(__file__).resolve().parent.parent
UNRESOLVED_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
# The Key Vault secret names the template creates (the settings below default to them).
DEFAULT_WEBHOOK_SECRET_NAME = "mlflow-webhook-secret"  # noqa: S105 (a name, not a secret)
DEFAULT_PAT_SECRET_NAME = "devops-pat"  # noqa: S105 (a name, not a secret)


class SecretSettings(BaseModel):
    """What verifying a delivery needs: where the secrets are, and how old a signed event may be.

    All a mis-signed request makes the relay read, and all a tool that only needs a secret reads.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    key_vault_url: str | None = Field(None, alias="KEY_VAULT_URL")
    azure_client_id: str | None = Field(None, alias="AZURE_CLIENT_ID")
    webhook_secret_name: str = Field(DEFAULT_WEBHOOK_SECRET_NAME, alias="WEBHOOK_SECRET_NAME")
    webhook_previous_secret_name: str | None = Field(None, alias="WEBHOOK_PREVIOUS_SECRET_NAME")
    devops_pat_secret_name: str = Field(DEFAULT_PAT_SECRET_NAME, alias="DEVOPS_PAT_SECRET_NAME")
    secret_cache_seconds: float = Field(300.0, alias="SECRET_CACHE_SECONDS", ge=0)
    webhook_max_age_seconds: float = Field(600.0, alias="WEBHOOK_MAX_AGE_SECONDS", gt=0)

    # Local development only (no KEY_VAULT_URL): secrets straight from the environment.
    webhook_secret: str | None = Field(None, alias="WEBHOOK_SECRET", repr=False)
    webhook_previous_secret: str | None = Field(None, alias="WEBHOOK_PREVIOUS_SECRET", repr=False)
    devops_pat: str | None = Field(None, alias="DEVOPS_PAT", repr=False)

    @field_validator("key_vault_url")
    @classmethod
    def _https_vault_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL, e.g. https://contoso-kv.vault.azure.net")
        return value

    @field_validator("webhook_secret", "webhook_previous_secret", "devops_pat")
    @classmethod
    def _resolved_reference(cls, value: str | None) -> str | None:
        if value is not None and value.strip().startswith(UNRESOLVED_KEY_VAULT_REFERENCE):
            raise ValueError(
                "is an unresolved Key Vault reference; set KEY_VAULT_URL and let the relay "
                "read the secret itself instead"
            )
        return value


class Settings(SecretSettings):
    """Every setting the relay reads; field aliases are the app-setting names."""

    devops_org_url: str = Field(alias="DEVOPS_ORG_URL")
    devops_project: str = Field(alias="DEVOPS_PROJECT", min_length=1)
    devops_auth: Literal["pat", "managed-identity"] = Field("managed-identity", alias="DEVOPS_AUTH")
    devops_deadline_seconds: float = Field(20.0, alias="DEVOPS_DEADLINE_SECONDS", gt=0)
    devops_ca_bundle: str | None = Field(None, alias="DEVOPS_CA_BUNDLE")

    routes_file: Path = Field(APP_ROOT / "routes.yaml", alias="ROUTES_FILE")
    dry_run: bool = Field(False, alias="RELAY_DRY_RUN")

    # Idempotency ledger and durable retry queue, in the Function App's own storage account.
    storage_connection_string: str | None = Field(None, alias="AzureWebJobsStorage", repr=False)
    storage_account_name: str | None = Field(None, alias="AzureWebJobsStorage__accountName")
    storage_table_uri: str | None = Field(None, alias="AzureWebJobsStorage__tableServiceUri")
    storage_queue_uri: str | None = Field(None, alias="AzureWebJobsStorage__queueServiceUri")
    idempotency_table: str = Field("relaydeliveries", alias="IDEMPOTENCY_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$")
    idempotency_retention_days: float = Field(7.0, alias="IDEMPOTENCY_RETENTION_DAYS", gt=0)
    retry_max_attempts: int = Field(8, alias="RETRY_MAX_ATTEMPTS", ge=1, le=50)
    retry_base_delay_seconds: float = Field(60.0, alias="RETRY_BASE_DELAY_SECONDS", ge=1, le=3600)
    # Must agree with host.json's queues.visibilityTimeout when both are given (read from there otherwise).
    queue_visibility_timeout_seconds: float | None = Field(None, alias="QUEUE_VISIBILITY_TIMEOUT_SECONDS", gt=0)

    # Delivery log, state marks and catch-up (relay.delivery_log, relay.catch_up; issue 17).
    delivery_log_table: str = Field(
        "relaydeliverylog", alias="DELIVERY_LOG_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    delivery_log_retention_days: float | None = Field(None, alias="DELIVERY_LOG_RETENTION_DAYS", gt=0)
    # Read by the Functions host (the timer's %CATCH_UP_SCHEDULE% binding); checked here.
    catch_up_schedule: str = Field("0 */15 * * * *", alias="CATCH_UP_SCHEDULE", pattern=r"^\S+( \S+){5}$")
    catch_up_registries: str = Field("", alias="CATCH_UP_REGISTRIES")
    mlflow_token_secret_name: str | None = Field(None, alias="MLFLOW_TOKEN_SECRET_NAME")

    @field_validator("catch_up_registries")
    @classmethod
    def _known_registries(cls, value: str) -> str:
        from relay.registry_specs import parse_registries

        try:
            parse_registries(value)
        except ConfigurationError as exc:
            raise ValueError(exc.detail.removeprefix("setting CATCH_UP_REGISTRIES: ")) from None
        return value

    @property
    def delivery_log_retention(self) -> float:
        """Seconds the delivery log keeps a record: its own setting, else the ledger's."""
        return (self.delivery_log_retention_days or self.idempotency_retention_days) * 86400

    @field_validator("devops_org_url")
    @classmethod
    def _https_org_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL, e.g. https://dev.azure.com/contoso")
        return value

    @field_validator("routes_file")
    @classmethod
    def _relative_to_app_root(cls, value: Path) -> Path:
        return value if value.is_absolute() else APP_ROOT / value

    @property
    def budgets(self) -> TimeBudgets:
        """The lease and the deadlines (checked by ``settings_from_env``)."""
        return resolve_budgets(self)

    @property
    def host_queues(self) -> HostQueueSettings:
        return host_queue_settings(host_json_path()) or HostQueueSettings()

    @property
    def uses_key_vault(self) -> bool:
        return bool(self.key_vault_url)

    @property
    def uses_storage(self) -> bool:
        return bool(
            self.storage_connection_string
            or self.storage_account_name
            or (self.storage_table_uri and self.storage_queue_uri)
        )


def host_json_path() -> Path:
    """The host.json the Functions host reads: in ``AzureWebJobsScriptRoot`` when set, else the app root.

    The host honours ``AzureWebJobsScriptRoot`` as its script root (unset in Azure: the app root).
    """
    root = os.environ.get("AzureWebJobsScriptRoot", "").strip()  # noqa: SIM112 (the host spells it so)
    return (Path(root) if root else APP_ROOT) / "host.json"


_Model = TypeVar("_Model", bound=BaseModel)

# Every app setting the relay reads, derived from the model (tests start from none of them set).
SETTING_NAMES = frozenset(field.alias for field in Settings.model_fields.values() if field.alias)


def resolve_budgets(settings: Settings, *, host_json: Path | None = None) -> TimeBudgets:
    """The time budgets for ``settings``, with host.json's visibility timeout.

    Raises:
        ConfigurationError: the setting and host.json disagree, or the lease outlasts the timeout.
    """
    host = host_queue_settings(host_json or host_json_path())
    from_host = host.visibility_timeout if host else None
    configured = settings.queue_visibility_timeout_seconds
    if configured is not None and from_host is not None and configured != from_host:
        raise ConfigurationError(
            f"setting QUEUE_VISIBILITY_TIMEOUT_SECONDS={configured:g} disagrees with host.json's "
            f"queues.visibilityTimeout ({from_host:g} s); the host uses host.json: make them equal"
        )
    visibility = configured if configured is not None else from_host
    if visibility is None:
        raise ConfigurationError("host.json not found: set QUEUE_VISIBILITY_TIMEOUT_SECONDS to its visibilityTimeout")
    return derive_budgets(deadline=settings.devops_deadline_seconds, visibility_timeout=visibility)


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping (empty values count as unset).

    Raises:
        ConfigurationError: naming each missing or invalid setting, or budgets that do not add up.
    """
    settings = _validated(Settings, environ)
    resolve_budgets(settings)
    return settings


def secret_settings_from_env(environ: Mapping[str, str]) -> SecretSettings:
    """Only the secret settings (tools that need a secret and nothing else). Raises like above."""
    return _validated(SecretSettings, environ)


def _validated(model: type[_Model], environ: Mapping[str, str]) -> _Model:
    values = {k: v for k, v in environ.items() if k in SETTING_NAMES and v.strip()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            reason = "is required" if err["type"] == "missing" else err["msg"]
            problems.append(f"setting {name} {reason}")
        raise ConfigurationError("; ".join(problems)) from None


_cached: Settings | None = None


def load_settings() -> Settings:
    """Return the process-wide settings, read from ``os.environ`` on first use."""
    global _cached
    if _cached is None:
        _cached = settings_from_env(os.environ)
    return _cached


def reset_settings() -> None:
    """Forget cached settings (tests, and the local server after changing the environment)."""
    global _cached
    _cached = None

"""Doctor checks against Entra ID and Key Vault: a token for each resource, each named secret."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from relay_tools.cli_errors import first_line
from relay_tools.doctor_checks import DEPLOY_GUIDE, CheckResult, DoctorContext, failed, passed, skipped

if TYPE_CHECKING:
    from relay.ports import SecretSource

STORAGE_SCOPE = "https://storage.azure.com/.default"
NO_SETTINGS = "the settings are incomplete (see above)"
IDENTITY_REMEDY = (
    "in Azure: the Function App must run as its user-assigned identity and AZURE_CLIENT_ID must be that "
    "identity's client id; locally: sign in with `az login` (DefaultAzureCredential)"
)


def key_vault_scope(vault_url: str) -> str:
    """The token scope for a vault: its host without the vault's own name (``vault.azure.net``,
    ``vault.azure.cn``, ...), as the vault's bearer challenge names it."""
    parts = urlsplit(vault_url)
    host = parts.hostname or ""
    domain = host.split(".", 1)[1] if "." in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"https://{domain}{port}/.default"


def token_scopes(ctx: DoctorContext) -> list[tuple[str, str]]:
    """(resource, scope) for each resource the settings make the identity sign in to."""
    from devops.auth import AZURE_DEVOPS_SCOPE

    settings = ctx.settings
    assert settings is not None
    scopes = []
    if settings.devops_auth == "managed-identity":
        scopes.append(("Azure DevOps", AZURE_DEVOPS_SCOPE))
    if settings.key_vault_url:
        scopes.append(("Key Vault", key_vault_scope(settings.key_vault_url)))
    if settings.uses_storage and not settings.storage_connection_string:
        scopes.append(("Storage", STORAGE_SCOPE))
    return scopes


def check_identity(ctx: DoctorContext) -> list[CheckResult]:
    """The app's identity (developer credentials locally) gets a token for each resource it needs."""
    from relay.composition import azure_credential

    if ctx.settings is None:
        return [skipped("identity", "the identity gets its tokens", NO_SETTINGS)]
    scopes = token_scopes(ctx)
    if not scopes:
        return [
            skipped(
                "identity",
                "the identity gets its tokens",
                "no resource needs one (PAT, secrets from the environment, storage by connection string)",
            )
        ]
    credential = azure_credential(ctx.settings.azure_client_id)
    return [_token(ctx, credential, resource, scope) for resource, scope in scopes]


def _token(ctx: DoctorContext, credential: Any, resource: str, scope: str) -> CheckResult:
    what = f"the identity gets a token for {resource} ({scope})"
    try:
        token = credential.get_token(scope)
    except Exception as exc:  # azure-identity raises several unrelated types, all with long messages
        return failed("identity", what, f"{type(exc).__name__}: {first_line(str(exc))}", IDENTITY_REMEDY)
    ctx.remember_sensitive(token.token)
    return passed("identity", what)


def check_secrets(ctx: DoctorContext) -> list[CheckResult]:
    """Key Vault (or, locally, the environment) answers and holds each secret the settings name."""
    from relay.composition import secret_source
    from relay_tools.tool_context import tool_secrets

    settings = ctx.settings
    if settings is None:
        return [skipped("secrets", "each named secret exists and is readable", NO_SETTINGS)]
    ctx.secrets = tool_secrets(settings)
    names = [("webhook", settings.webhook_secret_name if settings.uses_key_vault else "WEBHOOK_SECRET")]
    if settings.webhook_previous_secret_name or (not settings.uses_key_vault and settings.webhook_previous_secret):
        previous = settings.webhook_previous_secret_name if settings.uses_key_vault else "WEBHOOK_PREVIOUS_SECRET"
        names.append(("previous webhook", previous or ""))
    if settings.devops_auth == "pat":
        names.append(("pat", settings.devops_pat_secret_name if settings.uses_key_vault else "DEVOPS_PAT"))
    where = f"Key Vault {settings.key_vault_url}" if settings.key_vault_url else "the environment"
    source, _ = secret_source(settings)
    return [_secret(ctx, source, role, name, where) for role, name in names]


def _secret(ctx: DoctorContext, source: SecretSource, role: str, name: str, where: str) -> CheckResult:
    from relay.ports import SecretsUnavailable

    what = f"the {role} secret {name!r} exists in {where} and is readable"
    try:
        value = source.get(name)
    except SecretsUnavailable as exc:
        ctx.unreadable_secrets.add(role)
        return failed("secrets", what, exc.detail, _vault_remedy(exc))
    if not value:
        ctx.unreadable_secrets.add(role)
        return failed("secrets", what, "it does not exist (or is empty)", _missing_remedy(role, name, ctx))
    ctx.remember_sensitive(value)
    return passed("secrets", what)


def _vault_remedy(exc: BaseException) -> str:
    status = getattr(exc.__cause__, "status_code", None)
    if status == 403:
        return (
            "grant the 'Key Vault Secrets User' role on the vault to the identity that read it (the app's "
            f"identity in Azure, where the template grants it; your account locally); role assignments take "
            f"a minute or two to apply ({DEPLOY_GUIDE}, step 2)"
        )
    if "authenticate" in str(exc):
        return IDENTITY_REMEDY
    return "check KEY_VAULT_URL and that the vault is reachable from here (firewall, private endpoint, DNS)"


def _missing_remedy(role: str, name: str, ctx: DoctorContext) -> str:
    assert ctx.settings is not None
    if not ctx.settings.uses_key_vault:
        return f"set {name} in the environment (local development), or set KEY_VAULT_URL"
    if role == "pat":
        return f"store the PAT as secret {name!r} ({DEPLOY_GUIDE}, step 3), or switch to DEVOPS_AUTH=managed-identity"
    return f"store it in the vault as secret {name!r} ({DEPLOY_GUIDE}, step 3) or fix the *_SECRET_NAME setting"

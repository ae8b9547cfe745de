"""What the first answer's prefetch starts (``relay.prefetch``), and what the composition root asks
it to start (``relay.composition.build_prefetch``, ``azure_credential``)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import respx

from relay.composition import azure_credential, build_prefetch
from relay.managed_identity import AppServiceManagedIdentity
from relay.ports import SecretsUnavailable
from relay.prefetch import STORAGE_SCOPE, Prefetch, key_vault_scope
from relay.secrets import RelaySecrets
from relay.settings import settings_from_env

REPO_ROOT = Path(__file__).resolve().parents[2]
ORG = "https://dev.azure.com/contoso"
DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
BASE = {"DEVOPS_ORG_URL": ORG, "DEVOPS_PROJECT": "MLOps"}
IDENTITY = {"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": "h"}


class RecordingCredential:
    def __init__(self, error: Exception | None = None) -> None:
        self.scopes: list[str] = []
        self.error = error
        self.called = threading.Event()

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        self.scopes.extend(scopes)
        self.called.set()
        if self.error:
            raise self.error
        return object()


class NoSource:
    description = "nowhere"

    def get(self, name: str) -> str | None:
        raise AssertionError(f"nothing may be read here ({name})")


def secrets() -> RelaySecrets:
    return RelaySecrets(NoSource(), webhook_name="hook", previous_name=None, pat_name="pat", ttl=300)


@pytest.fixture(autouse=True)
def fresh_credentials(monkeypatch):
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    azure_credential.cache_clear()
    yield
    azure_credential.cache_clear()


class TestKeyVaultScope:
    """The scope Key Vault's challenge will name: the vault host's parent domain."""

    @pytest.mark.parametrize(
        ("vault_url", "scope"),
        [
            ("https://contoso-kv.vault.azure.net/", "https://vault.azure.net/.default"),
            ("https://contoso-kv.vault.azure.cn", "https://vault.azure.cn/.default"),
            ("https://127.0.0.1:8443", "https://0.0.1:8443/.default"),  # the stand-in's suffix relation
        ],
    )
    def test_scope_is_the_parent_domain(self, vault_url, scope):
        assert key_vault_scope(vault_url) == scope


class TestStart:
    """Every task runs in the background; a failure is dropped (the request meets it again)."""

    def test_tokens_are_asked_for_each_scope(self):
        credential = RecordingCredential()
        Prefetch(
            secrets=secrets(),
            devops_pat=False,
            credential=credential,
            token_scopes=("a/.default",),
            http=None,
            devops_org_url=ORG,
        ).start()
        assert credential.called.wait(5) and credential.scopes == ["a/.default"]

    def test_a_failing_token_is_dropped_without_a_warning(self, caplog):
        credential = RecordingCredential(error=SecretsUnavailable("identity endpoint down"))
        with caplog.at_level("DEBUG"):
            Prefetch(
                secrets=secrets(),
                devops_pat=False,
                credential=credential,
                token_scopes=("a/.default",),
                http=None,
                devops_org_url=ORG,
            ).start()
            assert credential.called.wait(5)
            time.sleep(0.05)
        assert [r.levelname for r in caplog.records if r.name == "relay.prefetch"] == ["DEBUG"]
        assert "identity endpoint down" not in caplog.text  # the type, never the detail

    def test_devops_connection_is_opened_with_an_anonymous_get(self):
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(f"{ORG}/_apis/connectionData").mock(return_value=httpx.Response(203, text="<html/>"))
            with httpx.Client() as http:
                Prefetch(
                    secrets=secrets(),
                    devops_pat=False,
                    credential=None,
                    token_scopes=(),
                    http=http,
                    devops_org_url=ORG + "/",
                ).start()
                for _ in range(100):
                    if route.called:
                        break
                    time.sleep(0.02)
        assert route.call_count == 1 and "Authorization" not in route.calls.last.request.headers

    def test_unreachable_devops_is_dropped(self):
        with respx.mock(assert_all_called=False) as mock:
            route = mock.get(f"{ORG}/_apis/connectionData").mock(side_effect=httpx.ConnectError("refused"))
            with httpx.Client() as http:
                Prefetch(
                    secrets=secrets(), devops_pat=False, credential=None, token_scopes=(), http=http, devops_org_url=ORG
                ).start()
                for _ in range(100):
                    if route.called:
                        break
                    time.sleep(0.02)
        assert route.called

    def test_pat_is_read_ahead_only_when_asked(self):
        asked, not_asked = secrets(), secrets()
        Prefetch(
            secrets=asked, devops_pat=True, credential=None, token_scopes=(), http=None, devops_org_url=ORG
        ).start()
        Prefetch(
            secrets=not_asked, devops_pat=False, credential=None, token_scopes=(), http=None, devops_org_url=ORG
        ).start()
        assert asked._pat_ahead and not not_asked._pat_ahead  # read behind the webhook secret (test_secrets.py)


class TestBuildPrefetch:
    """The composition root asks for the tokens the first answer will need, from the platform only."""

    def build(self, monkeypatch, env):
        for name, value in env.items():
            if name in IDENTITY:
                monkeypatch.setenv(name, value)
        settings = settings_from_env({**BASE, **env})
        with httpx.Client() as http:
            return build_prefetch(settings, secrets(), None if settings.dry_run else http)

    def test_in_azure_the_vault_storage_and_devops_tokens_are_asked_for(self, monkeypatch):
        prefetch = self.build(
            monkeypatch,
            {
                **IDENTITY,
                "KEY_VAULT_URL": "https://kv.vault.azure.net",
                "AzureWebJobsStorage__accountName": "st",
                "DEVOPS_AUTH": "managed-identity",
            },
        )
        assert isinstance(prefetch.credential, AppServiceManagedIdentity)
        assert prefetch.token_scopes == ("https://vault.azure.net/.default", STORAGE_SCOPE, DEVOPS_SCOPE)
        assert not prefetch.devops_pat and prefetch.http is not None

    def test_storage_by_connection_string_needs_no_token(self, monkeypatch):
        prefetch = self.build(
            monkeypatch,
            {
                **IDENTITY,
                "KEY_VAULT_URL": "https://kv.vault.azure.net",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "DEVOPS_AUTH": "pat",
            },
        )
        assert prefetch.token_scopes == ("https://vault.azure.net/.default",) and prefetch.devops_pat

    def test_without_the_platform_endpoint_no_token_is_asked_for(self, monkeypatch):
        prefetch = self.build(monkeypatch, {"KEY_VAULT_URL": "https://kv.vault.azure.net"})
        assert prefetch.credential is None

    def test_dry_run_connects_nothing_and_reads_no_pat(self, monkeypatch):
        prefetch = self.build(monkeypatch, {"RELAY_DRY_RUN": "true"})
        assert prefetch.http is None and not prefetch.devops_pat


class TestAzureCredential:
    """The platform's endpoint where it exists; ``DefaultAzureCredential`` elsewhere."""

    def test_platform_endpoint_gives_the_relays_own_credential(self, monkeypatch):
        for name, value in IDENTITY.items():
            monkeypatch.setenv(name, value)
        assert isinstance(azure_credential("client-id"), AppServiceManagedIdentity)

    def test_service_fabric_thumbprint_is_not_the_app_service_protocol(self, monkeypatch):
        for name, value in {**IDENTITY, "IDENTITY_SERVER_THUMBPRINT": "ab12"}.items():
            monkeypatch.setenv(name, value)
        assert type(azure_credential(None)).__name__ == "DefaultAzureCredential"

    def test_locally_it_is_default_azure_credential(self):
        assert type(azure_credential(None)).__name__ == "DefaultAzureCredential"

    def test_azure_identity_is_not_imported_where_the_platform_endpoint_exists(self):
        code = (
            "import sys; from relay.composition import azure_credential; "
            "azure_credential('c').__class__; print('azure.identity' in sys.modules, 'msal' in sys.modules)"
        )
        env = {"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": "h", "PATH": ""}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO_ROOT
        )
        assert done.stdout.split() == ["False", "False"]

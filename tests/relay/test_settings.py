"""Settings from the environment: fail fast, name the setting, never at import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from relay.settings import APP_ROOT, load_settings, reset_settings, settings_from_env
from webhook.errors import ConfigurationError

MINIMAL = {"DEVOPS_ORG_URL": "https://dev.azure.com/contoso", "DEVOPS_PROJECT": "MLOps"}


class TestSettingsFromEnv:
    def test_minimal_settings_have_safe_defaults(self):
        settings = settings_from_env(MINIMAL)
        assert settings.devops_org_url == "https://dev.azure.com/contoso"
        assert settings.devops_auth == "managed-identity"  # no PAT unless opted in
        assert settings.routes_file == APP_ROOT / "routes.yaml"
        assert not settings.dry_run and not settings.uses_key_vault and not settings.uses_storage

    def test_missing_settings_are_each_named(self):
        with pytest.raises(ConfigurationError) as caught:
            settings_from_env({})
        assert "setting DEVOPS_ORG_URL is required" in caught.value.detail
        assert "setting DEVOPS_PROJECT is required" in caught.value.detail

    def test_blank_values_count_as_missing(self):
        with pytest.raises(ConfigurationError, match="DEVOPS_PROJECT is required"):
            settings_from_env({**MINIMAL, "DEVOPS_PROJECT": "   "})

    @pytest.mark.parametrize("url", ["http://dev.azure.com/contoso", "dev.azure.com/contoso", "https://"])
    def test_non_https_org_url_is_refused(self, url):
        with pytest.raises(ConfigurationError, match=r"DEVOPS_ORG_URL.*https://"):
            settings_from_env({**MINIMAL, "DEVOPS_ORG_URL": url})

    def test_org_url_trailing_slash_is_dropped(self):
        assert settings_from_env({**MINIMAL, "DEVOPS_ORG_URL": "https://dev.azure.com/contoso/"}).devops_org_url == (
            "https://dev.azure.com/contoso"
        )

    def test_non_https_key_vault_url_is_refused(self):
        with pytest.raises(ConfigurationError, match="KEY_VAULT_URL"):
            settings_from_env({**MINIMAL, "KEY_VAULT_URL": "http://kv.vault.azure.net"})

    @pytest.mark.parametrize("name", ["WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET", "DEVOPS_PAT"])
    def test_unresolved_key_vault_reference_is_refused(self, name):
        reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)"
        with pytest.raises(ConfigurationError, match=f"{name} .*unresolved Key Vault reference") as caught:
            settings_from_env({**MINIMAL, name: reference})
        assert "SecretUri" not in caught.value.detail

    def test_unknown_auth_mode_is_refused(self):
        with pytest.raises(ConfigurationError, match="DEVOPS_AUTH"):
            settings_from_env({**MINIMAL, "DEVOPS_AUTH": "password"})

    def test_deadline_must_be_positive(self):
        with pytest.raises(ConfigurationError, match="DEVOPS_DEADLINE_SECONDS"):
            settings_from_env({**MINIMAL, "DEVOPS_DEADLINE_SECONDS": "0"})

    def test_relative_routes_file_is_under_the_app_root(self):
        assert settings_from_env({**MINIMAL, "ROUTES_FILE": "conf/r.yaml"}).routes_file == APP_ROOT / "conf/r.yaml"

    def test_secret_values_are_not_in_the_repr(self):
        settings = settings_from_env({**MINIMAL, "WEBHOOK_SECRET": "hush-123", "DEVOPS_PAT": "pat-456"})
        assert "hush-123" not in repr(settings) and "pat-456" not in repr(settings)

    def test_storage_is_used_with_an_account_name(self):
        assert settings_from_env({**MINIMAL, "AzureWebJobsStorage__accountName": "st"}).uses_storage


class TestLoadSettings:
    def test_settings_are_cached_until_reset(self, clean_env):
        clean_env.setenv("DEVOPS_ORG_URL", "https://dev.azure.com/a")
        clean_env.setenv("DEVOPS_PROJECT", "P")
        first = load_settings()
        clean_env.setenv("DEVOPS_PROJECT", "Q")
        assert load_settings() is first
        reset_settings()
        assert load_settings().devops_project == "Q"


class TestImportIsSideEffectFree:
    def test_importing_function_app_needs_no_settings_and_no_network(self, tmp_path):
        guard = textwrap.dedent("""
            import socket

            def refuse(*args, **kwargs):
                raise AssertionError("network access at import time")

            socket.socket.connect = refuse
            socket.socket.connect_ex = refuse
            socket.create_connection = refuse
            socket.getaddrinfo = refuse

            import function_app
            import relay.composition

            assert function_app.app is not None
            assert relay.composition._relay is None, "the relay was built at import time"
            print("imported")
        """)
        result = subprocess.run(
            [sys.executable, "-c", guard], env={}, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "imported"

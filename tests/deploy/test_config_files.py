"""host.json, local.settings.json.example and the Bicep app settings agree with what the app reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from relay.budgets import derive_budgets, host_queue_settings
from relay.settings import SETTING_NAMES, Settings, settings_from_env

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"

# Read by the Functions host or its Application Insights integration, not by relay/settings.py.
HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "PYTHON_ISOLATE_WORKER_DEPENDENCIES",  # the 3.11/3.12 Python worker (infra/resources.bicep says why)
    "PYTHON_THREADPOOL_THREAD_COUNT",  # the Python worker's pool for synchronous functions
}
APP_SETTING = re.compile(r"name: '([A-Za-z_][A-Za-z0-9_]*)'\s*\n\s*value:")
BICEP_PARAM = re.compile(r"^param (\w+) \w+( = .*)?$", re.MULTILINE)


def app_setting_names() -> set[str]:
    return set(SETTING_NAMES)


def secret_setting_names() -> set[str]:
    """Settings the app itself marks as secret (hidden from repr)."""
    return {field.alias for field in Settings.model_fields.values() if field.alias and field.repr is False}


def seconds(timespan: str) -> int:
    hours, minutes, secs = (int(part) for part in timespan.split(":"))
    return hours * 3600 + minutes * 60 + secs


def load_json(name: str) -> Any:
    return json.loads((REPO_ROOT / name).read_text())


class TestHostJson:
    """host.json: runtime 2.0, bundle v4, a timeout above any relay deadline, errors never sampled."""

    def test_version_and_extension_bundle(self) -> None:
        host = load_json("host.json")
        assert host["version"] == "2.0"
        assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}

    def test_function_timeout_exceeds_the_longest_lease_the_queue_allows(self) -> None:
        # The lease may be at most the queue's visibilityTimeout (checked when settings load), and
        # every attempt ends within its lease: the host must never cut a function off before that.
        queues = host_queue_settings(REPO_ROOT / "host.json")
        assert queues is not None
        assert seconds(load_json("host.json")["functionTimeout"]) >= queues.visibility_timeout + 60

    def test_default_deadline_fits_the_shipped_visibility_timeout(self) -> None:
        budgets = derive_budgets(
            deadline=Settings.model_fields["devops_deadline_seconds"].default,
            visibility_timeout=host_queue_settings(REPO_ROOT / "host.json").visibility_timeout,
        )
        assert budgets.lease <= budgets.visibility_timeout

    def test_requests_exceptions_and_log_lines_are_never_sampled(self) -> None:
        sampling = load_json("host.json")["logging"]["applicationInsights"]["samplingSettings"]
        excluded = set(sampling["excludedTypes"].split(";"))
        assert {"Request", "Exception", "Trace"} <= excluded

    def test_retry_queue_messages_are_base64_as_the_relay_writes_them(self) -> None:
        queues = load_json("host.json")["extensions"]["queues"]
        assert queues["messageEncoding"] == "base64"  # relay/retry_queue.py uses TextBase64EncodePolicy
        assert 2 <= queues["maxDequeueCount"] <= 10


class TestLocalSettingsExample:
    """The example works as is for local development and holds no real secret."""

    def test_is_a_local_python_app_on_azurite(self) -> None:
        example = load_json("local.settings.json.example")
        assert example["IsEncrypted"] is False
        assert example["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"
        assert example["Values"]["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"

    def test_every_value_is_a_setting_the_app_or_host_reads(self) -> None:
        values = load_json("local.settings.json.example")["Values"]
        assert set(values) - app_setting_names() - HOST_SETTINGS == set()

    def test_loads_into_the_app_settings(self) -> None:
        settings = settings_from_env(load_json("local.settings.json.example")["Values"])
        assert not settings.uses_key_vault

    def test_secrets_are_obvious_placeholders(self) -> None:
        values = load_json("local.settings.json.example")["Values"]
        for name in secret_setting_names() - {"AzureWebJobsStorage"}:
            assert values.get(name, "") in ("", "local-dev-only-not-a-real-secret"), name


class TestBicepAppSettings:
    """The app settings infra/ writes: known names, nothing secret, everything required."""

    def names(self) -> set[str]:
        return set(APP_SETTING.findall((INFRA / "resources.bicep").read_text()))

    def test_every_setting_is_read_by_the_app_or_the_host(self) -> None:
        assert self.names() - app_setting_names() - HOST_SETTINGS == set()

    def test_no_setting_holds_a_secret(self) -> None:
        assert self.names() & secret_setting_names() == set()
        assert "AzureWebJobsStorage__credential" in self.names()

    def test_required_settings_and_the_identity_are_set(self) -> None:
        required = {f.alias for f in Settings.model_fields.values() if f.is_required() and f.alias}
        assert required | {"KEY_VAULT_URL", "AZURE_CLIENT_ID", "AzureWebJobsStorage__accountName"} <= self.names()

    def test_python_313_is_the_default_runtime_in_both_templates(self) -> None:
        for name in ("main.bicep", "resources.bicep"):
            assert "param pythonVersion string = '3.13'" in (INFRA / name).read_text(), name
        assert "version: pythonVersion" in (INFRA / "resources.bicep").read_text()
        given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
        assert given["pythonVersion"]["value"] == "${PYTHON_VERSION=3.13}"

    def test_worker_dependency_isolation_is_set_below_313_only(self) -> None:
        # The 3.13 worker always isolates (and ignores the setting); 3.11/3.12 need it to honour requirements.txt.
        text = (INFRA / "resources.bicep").read_text()
        block = re.search(r"var dependencyIsolationAppSettings = (.*?)\n\]", text, re.DOTALL)
        assert block and block.group(1).startswith("pythonVersion == '3.13' ? [] : [")
        assert "name: 'PYTHON_ISOLATE_WORKER_DEPENDENCIES'\n    value: '1'" in block.group(1)
        assert "concat(baseAppSettings, dependencyIsolationAppSettings," in text

    def test_worker_threads_match_the_per_instance_http_concurrency(self) -> None:
        # The sync webhook runs on the worker's pool: fewer threads than concurrent requests queues them inside.
        text = (INFRA / "resources.bicep").read_text()
        assert "perInstanceConcurrency: httpPerInstanceConcurrency" in text
        assert "name: 'PYTHON_THREADPOOL_THREAD_COUNT'\n    value: string(httpPerInstanceConcurrency)" in text

    def test_azd_parameters_match_the_template(self) -> None:
        params = {name: default for name, default in BICEP_PARAM.findall((INFRA / "main.bicep").read_text())}
        given = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
        assert given <= set(params)
        assert {name for name, default in params.items() if not default} <= given

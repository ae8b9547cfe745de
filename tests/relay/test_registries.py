"""Registry readers over their REST APIs (respx), the CATCH_UP_REGISTRIES syntax, the timer's no-op.

Open-source MLflow is also read from a real ``mlflow server`` in ``tests/e2e/test_catch_up_e2e.py``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import pytest
import respx

from relay.catch_up_runner import entra_token, registry_auth
from relay.registries import DATABRICKS_SCOPE, ModelFilter, ObservedState, RegistryUnavailable, registry_reader
from relay.registry_specs import RegistrySpec, parse_registries
from webhook.errors import ConfigurationError

HOST = "https://adb-1.2.azuredatabricks.net"
MLFLOW = "https://mlflow.example.com"


class Credential:
    def __init__(self):
        self.scopes = []

    def get_token(self, scope):
        self.scopes.append(scope)
        return SimpleNamespace(token="entra-token-for-databricks")


@pytest.fixture
def http():
    with httpx.Client() as client:
        yield client


class TestDatabricksStages:
    def test_the_latest_version_in_each_stage_is_read_with_an_entra_token(self, http):
        spec = RegistrySpec("databricks", HOST)
        credential = Credential()
        auth = registry_auth(spec, credential_factory=lambda: credential, mlflow_token=lambda: None)
        with respx.mock(assert_all_called=True) as mock:
            search = mock.get(f"{HOST}/api/2.0/mlflow/registered-models/search").mock(
                side_effect=[
                    httpx.Response(
                        200,
                        json={
                            "registered_models": [
                                {
                                    "name": "fraud",
                                    "latest_versions": [
                                        {"version": "3", "current_stage": "Production"},
                                        {"version": "5", "current_stage": "Production"},
                                        {"version": "6", "current_stage": "Staging"},
                                        {"version": "7", "current_stage": "None"},
                                    ],
                                }
                            ],
                            "next_page_token": "p2",
                        },
                    ),
                    httpx.Response(200, json={"registered_models": [{"name": "other", "latest_versions": []}]}),
                ]
            )
            states = registry_reader(spec, http, auth=auth).states(ModelFilter(any=True))
        assert states == [
            ObservedState("databricks", "fraud", "5", stage="Production"),
            ObservedState("databricks", "fraud", "6", stage="Staging"),
        ]
        assert credential.scopes == [DATABRICKS_SCOPE, DATABRICKS_SCOPE]
        assert search.calls[0].request.headers["Authorization"] == "Bearer entra-token-for-databricks"
        assert search.calls[1].request.url.params["page_token"] == "p2"

    def test_named_models_are_read_one_by_one_and_a_missing_one_is_skipped(self, http):
        spec = RegistrySpec("databricks", HOST)
        with respx.mock(assert_all_called=True) as mock:
            mock.get(f"{HOST}/api/2.0/mlflow/registered-models/get", params={"name": "fraud"}).mock(
                return_value=httpx.Response(
                    200,
                    json={
                        "registered_model": {
                            "name": "fraud",
                            "latest_versions": [{"version": "2", "current_stage": "Production"}],
                        }
                    },
                )
            )
            mock.get(f"{HOST}/api/2.0/mlflow/registered-models/get", params={"name": "gone"}).mock(
                return_value=httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
            )
            states = registry_reader(spec, http).states(ModelFilter(frozenset({"fraud", "gone"})))
        assert states == [ObservedState("databricks", "fraud", "2", stage="Production")]


class TestUnityCatalog:
    def test_the_schema_is_listed_and_each_models_aliases_read(self, http):
        spec = RegistrySpec("unity-catalog", HOST, "main.ml")
        with respx.mock(assert_all_called=True) as mock:
            mock.get(f"{HOST}/api/2.1/unity-catalog/models").mock(
                return_value=httpx.Response(
                    200, json={"registered_models": [{"full_name": "main.ml.fraud"}, {"full_name": "main.ml.skip"}]}
                )
            )
            mock.get(f"{HOST}/api/2.1/unity-catalog/models/main.ml.fraud").mock(
                return_value=httpx.Response(
                    200, json={"full_name": "main.ml.fraud", "aliases": [{"alias_name": "champion", "version_num": 4}]}
                )
            )
            states = registry_reader(spec, http).states(ModelFilter(patterns=("main.ml.fr*",)))
        assert states == [ObservedState("mlflow", "main.ml.fraud", "4", alias="champion")]


class TestFailures:
    def test_an_unreachable_or_refusing_registry_is_unavailable_not_a_crash(self, http):
        spec = RegistrySpec("mlflow", MLFLOW)
        with respx.mock() as mock:
            mock.get(f"{MLFLOW}/api/2.0/mlflow/registered-models/search").mock(side_effect=httpx.ConnectError("x"))
            with pytest.raises(RegistryUnavailable, match="unreachable"):
                registry_reader(spec, http).states(ModelFilter(any=True))
            mock.get(f"{MLFLOW}/api/2.0/mlflow/registered-models/search").mock(return_value=httpx.Response(403))
            with pytest.raises(RegistryUnavailable, match="HTTP 403"):
                registry_reader(spec, http).states(ModelFilter(any=True))

    def test_no_entra_token_is_unavailable(self):
        class Broken:
            def get_token(self, scope):
                raise RuntimeError("no identity here")

        with pytest.raises(RegistryUnavailable, match="no Entra token"):
            entra_token(lambda: Broken())()


class TestRegistrySettings:
    def test_entries_of_every_kind_parse(self):
        specs = parse_registries(f"mlflow={MLFLOW}/, databricks={HOST}; uc={HOST}#main.ml")
        assert [(s.kind, s.url, s.scope) for s in specs] == [
            ("mlflow", MLFLOW, ""),
            ("databricks", HOST, ""),
            ("unity-catalog", HOST, "main.ml"),
        ]
        assert parse_registries("") == ()

    @pytest.mark.parametrize(
        "text",
        ["mlflow", "svn=https://x", f"databricks=http://{HOST[8:]}", f"databricks={HOST}#main.ml", f"uc={HOST}#nodot"],
    )
    def test_a_wrong_entry_is_named(self, text):
        with pytest.raises(ConfigurationError, match="CATCH_UP_REGISTRIES"):
            parse_registries(text)

    def test_the_settings_refuse_a_wrong_entry_at_load(self, relay_env):
        from relay.settings import settings_from_env

        with pytest.raises(ConfigurationError, match="setting CATCH_UP_REGISTRIES"):
            settings_from_env(
                {
                    "DEVOPS_ORG_URL": "https://dev.azure.com/c",
                    "DEVOPS_PROJECT": "p",
                    "CATCH_UP_REGISTRIES": "svn=https://x",
                }
            )


def test_the_timer_is_a_no_op_with_one_info_line_when_no_registry_is_configured(relay_env, caplog):
    from azure.functions.timer import TimerRequest

    import function_app
    from relay_tools.local_host import registered_functions

    [timer] = [f for f in registered_functions(function_app.app) if f.get_function_name() == "CatchUpMissedEvents"]
    assert timer.get_trigger().get_dict_repr()["schedule"] == "%CATCH_UP_SCHEDULE%"
    with caplog.at_level(logging.INFO, logger="relay"):
        timer.get_user_function()(TimerRequest())
    assert [r.getMessage() for r in caplog.records if "catch-up" in r.getMessage()] == [
        "relay catch-up: CATCH_UP_REGISTRIES is empty, nothing to do"
    ]

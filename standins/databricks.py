"""A real Databricks ``WorkspaceClient`` that needs no token and reaches no workspace."""

from __future__ import annotations

from typing import Any

import responses

DATABRICKS_HOST = "https://adb-1.azuredatabricks.net"


def fake_workspace(host: str = DATABRICKS_HOST) -> Any:
    """A ``WorkspaceClient`` whose credential is a fixed header: no token, no network.

    Build it under ``responses``: the SDK first asks the host for its metadata, which gets a
    404 here so the explicit configuration is used.
    """
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.credentials_provider import CredentialsStrategy

    class FixedHeader(CredentialsStrategy):
        def auth_type(self) -> str:
            return "unit-test"

        def __call__(self, cfg: Any) -> Any:
            return lambda: {"Authorization": "Bearer unit-test-not-a-credential"}

    responses.add(responses.GET, f"{host}/.well-known/databricks-config", status=404)
    return WorkspaceClient(config=Config(host=host, credentials_strategy=FixedHeader()))

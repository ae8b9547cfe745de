"""Fixtures for the pipeline steps: the Databricks stand-in (TLS, loopback) and a real ``mlflow server``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from standins.databricks import DatabricksStandIn

JOB_ID = 101


@pytest.fixture
def databricks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksStandIn]:
    """A started stand-in with job 101; clients trust its CA through ``REQUESTS_CA_BUNDLE``."""
    standin = DatabricksStandIn(workdir=tmp_path / "databricks")
    standin.jobs[JOB_ID] = {
        "name": "mlflow-devops-relay-validate-PRODUCTION",
        "parameters": [{"name": "model_name", "default": ""}, {"name": "registry_uri", "default": "databricks"}],
    }
    standin.start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.tls.ca_file))
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``mlflow server`` (sqlite registry) for this module, started as tests/e2e does."""
    from tests.e2e.conftest import start_mlflow_server, stop_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_mlflow_server(server)


@pytest.fixture
def registry(mlflow_server: Any) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)

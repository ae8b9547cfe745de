"""A real local MLflow registry (sqlite, no server) and the Databricks stand-in, shared by the job tests.

Logging a pyfunc model is the slow part, so two models are logged once per session (one
with a signature, one without); each test registers its own model name from them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from standins.databricks import DatabricksStandIn, fake_workspace

mlflow = pytest.importorskip("mlflow")


class EchoModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """The smallest real pyfunc: returns its input.

    ``predict`` is deliberately unannotated: type hints would make MLflow infer a signature,
    and the "unsigned" model must really have none.
    """

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


@dataclass(frozen=True)
class LocalRegistry:
    uri: str
    client: Any
    signed_model_uri: str
    unsigned_model_uri: str

    def register(self, model_uri: str | None = None) -> str:
        """Register a fresh model name with one version (READY at once on sqlite); return the name."""
        name = f"model-{uuid.uuid4().hex[:8]}"
        self.client.create_registered_model(name)
        self.client.create_model_version(name, model_uri or self.signed_model_uri)
        return name

    def add_version(self, name: str) -> str:
        return str(self.client.create_model_version(name, self.signed_model_uri).version)


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    import pandas as pd
    from mlflow.models import infer_signature

    root: Path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("job-tests", artifact_location=(root / "artifacts").as_uri())
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    with mlflow.start_run(experiment_id=experiment):
        signed = mlflow.pyfunc.log_model(
            name="signed", python_model=EchoModel(), signature=infer_signature(frame, frame)
        )
        unsigned = mlflow.pyfunc.log_model(name="unsigned", python_model=EchoModel())
    yield LocalRegistry(uri, mlflow.MlflowClient(uri, uri), signed.model_uri, unsigned.model_uri)
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture
def databricks_workspace() -> Any:
    """A factory for ``fake_workspace``; call it inside ``responses.activate``."""
    return fake_workspace


@pytest.fixture
def databricks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksStandIn]:
    """The loopback Databricks stand-in (TLS); clients trust its CA through ``REQUESTS_CA_BUNDLE``."""
    standin = DatabricksStandIn(workdir=tmp_path / "databricks").start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.tls.ca_file))
    try:
        yield standin
    finally:
        standin.stop()

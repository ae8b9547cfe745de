"""``mlflow-relay sync`` from the CLI: wired in, one-line errors, unreachable servers give up quickly."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from relay_tools.cli import main
from relay_tools.sync import MLFLOW_HTTP_BOUNDS, bounded_mlflow_http

RELAY = "https://relay.example.test/api/MLflowWebHookTransition"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text("rules:\n  - {name: c, pipeline_id: 1, when: {event: model_version_alias.created, alias: c}}\n")
    return path


def test_unreachable_mlflow_server_is_one_line(
    closed_port: int, rules: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in MLFLOW_HTTP_BOUNDS:
        monkeypatch.delenv(name, raising=False)
    server = f"http://127.0.0.1:{closed_port}"

    code = main(["sync", "--platform", "mlflow", "--url", RELAY, "--rules", str(rules), "--tracking-uri", server])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"mlflow-relay sync --platform mlflow ({server}): API request to {server}/")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unreachable_databricks_workspace_is_one_line(
    closed_port: int, rules: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("databricks.sdk")
    host = f"https://127.0.0.1:{closed_port}"
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-a-credential")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none"))

    code = main(["sync", "--platform", "unity-catalog", "--url", RELAY, "--rules", str(rules)])

    err = capsys.readouterr().err
    assert code == 1
    assert err == f"mlflow-relay sync --platform unity-catalog ({host}): no answer (Timed out after 0:00:03)\n"


def test_a_missing_rules_file_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["sync", "--platform", "mlflow", "--url", RELAY, "--rules", str(missing), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"mlflow-relay sync: rules file {str(missing)!r} cannot be read (No such file or directory)\n"
    )


def test_mlflow_retry_bounds_apply_only_during_sync_and_never_override_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in MLFLOW_HTTP_BOUNDS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    with bounded_mlflow_http():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"

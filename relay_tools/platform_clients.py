"""The registry platforms' clients for ``mlflow-relay webhooks``, built with bounded patience, and
their errors in one line: what to install, what to configure, or who refused.

``databricks-sdk`` and ``mlflow`` come with the optional ``databricks`` extra and are imported
only here, lazily: the Function App never loads them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relay_tools.cli_errors import CliError, ExitCode, first_line

INSTALL_EXTRA = "mlflow-relay webhooks needs the `databricks` extra: pip install -e '.[databricks]'"
DATABRICKS_SIGN_IN = (
    "Databricks sign-in is not configured: set DATABRICKS_HOST=https://adb-<id>.<n>.azuredatabricks.net and sign "
    "in (`az login`, or a ~/.databrickscfg profile via DATABRICKS_CONFIG_PROFILE)"
)
NO_TRACKING_URI = (
    "--platform mlflow needs the tracking server: pass --tracking-uri https://mlflow.example.com "
    "or set MLFLOW_TRACKING_URI (nothing is created locally without one)"
)
# A person waits seconds, not MLflow's default minutes of retries (7 retries, 120 s timeouts).
MLFLOW_PATIENCE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
DATABRICKS_RETRY_TIMEOUT_SECONDS = 5
DATABRICKS_HTTP_TIMEOUT_SECONDS = 10


def tracking_uri(args: argparse.Namespace) -> str:
    """``--tracking-uri``, else MLflow's own environment variables.

    Raises:
        CliError: none is given (MLflow would silently create ``./mlflow.db``).
    """
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_REGISTRY_URI")
    if not uri:
        raise CliError(NO_TRACKING_URI, ExitCode.USAGE)
    return str(uri)


def databricks_workspace() -> Any:
    """``WorkspaceClient`` from the SDK's default configuration, retrying for seconds, not minutes."""
    try:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config
    except ImportError:
        raise CliError(INSTALL_EXTRA, ExitCode.CONFIGURATION) from None
    config = Config(
        retry_timeout_seconds=DATABRICKS_RETRY_TIMEOUT_SECONDS, http_timeout_seconds=DATABRICKS_HTTP_TIMEOUT_SECONDS
    )
    return WorkspaceClient(config=config)


def mlflow_client(uri: str) -> Any:
    """``MlflowClient`` for ``uri``, with MLflow's HTTP retries bounded unless the user set them."""
    for name, value in MLFLOW_PATIENCE.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise CliError(INSTALL_EXTRA, ExitCode.CONFIGURATION) from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def platform_errors(platform: str, target: str) -> Iterator[None]:
    """Turn the platform SDK's errors into a ``CliError``: one line, the exit code it means."""
    try:
        yield
    except CliError:
        raise
    except ImportError:
        raise CliError(INSTALL_EXTRA, ExitCode.CONFIGURATION) from None
    except Exception as exc:
        translated = _databricks_error(exc, target) if platform == "databricks" else _mlflow_error(exc, target)
        if translated is None:
            raise
        raise translated from None


def _databricks_error(exc: Exception, host: str) -> CliError | None:
    from databricks.sdk import errors
    from databricks.sdk.errors.base import DatabricksError

    text = first_line(str(exc))
    if isinstance(exc, ValueError) and "auth" in text:
        return CliError(DATABRICKS_SIGN_IN, ExitCode.CONFIGURATION)
    if isinstance(exc, errors.Unauthenticated | errors.PermissionDenied):
        return CliError(f"Databricks refused: {text}", ExitCode.REFUSED)
    if isinstance(exc, errors.TemporarilyUnavailable | errors.TooManyRequests | errors.InternalError):
        return CliError(f"Databricks is unavailable: {text}", ExitCode.UNAVAILABLE)
    if isinstance(exc, DatabricksError):
        return CliError(f"Databricks refused: {text}", ExitCode.REFUSED)
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return CliError(
            f"Databricks workspace {host or '(DATABRICKS_HOST)'} did not answer: {text}", ExitCode.UNAVAILABLE
        )
    if isinstance(exc, ValueError):
        return CliError(f"Databricks configuration: {text}", ExitCode.CONFIGURATION)
    return None


def _mlflow_error(exc: Exception, uri: str) -> CliError | None:
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        return CliError(f"MLflow at {uri} refused: {first_line(exc.message)}", ExitCode.REFUSED)
    if isinstance(exc, MlflowException):
        message = first_line(exc.message, limit=2000)
        if message.startswith("API request to"):  # the server never answered
            reason = _connection_reason(message)
            return CliError(
                f"the MLflow tracking server at {uri} did not answer ({reason}): check --tracking-uri "
                "or MLFLOW_TRACKING_URI",
                ExitCode.UNAVAILABLE,
            )
        return CliError(f"MLflow: {first_line(message)}", ExitCode.REFUSED)
    return None


def _connection_reason(message: str) -> str:
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ):
        if needle in message:
            return reason
    return "no answer"

"""Thin adapters over ``MlflowClient`` for the job: readiness, current state, outcome tags.

Works the same against a Databricks workspace registry, Unity Catalog (``databricks-uc``)
or a local sqlite registry, because it only uses ``MlflowClient`` calls all three support.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from databricks_job.errors import ModelVersionNotReady

READY = "READY"
FAILED_REGISTRATION = "FAILED_REGISTRATION"
# MLflow caps tag values at 5000 characters (Unity Catalog at fewer); messages are cut well below.
MAX_TAG_VALUE = 500


class RegistryClient(Protocol):
    """The part of ``mlflow.MlflowClient`` the job uses (tests may pass the real one)."""

    def get_model_version(self, name: str, version: str) -> Any: ...
    def get_model_version_by_alias(self, name: str, alias: str) -> Any: ...
    def set_model_version_tag(self, name: str, version: str, key: str, value: Any) -> None: ...


def wait_until_ready(
    client: RegistryClient,
    name: str,
    version: str,
    *,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Poll until the version's status is ``READY`` and return it.

    Unity Catalog copies artifacts after ``create_model_version`` returns, so a fresh
    version is ``PENDING_REGISTRATION`` for a while; loading it before then fails.

    Raises:
        ModelVersionNotReady: the registration failed, or is still pending after ``timeout`` s.
    """
    deadline = clock() + timeout
    while True:
        model_version = client.get_model_version(name, version)
        status = str(getattr(model_version, "status", READY) or READY)
        if status == READY:
            return model_version
        if status == FAILED_REGISTRATION:
            detail = getattr(model_version, "status_message", "") or "no status message"
            raise ModelVersionNotReady(f"{name} version {version} failed to register: {detail}")
        if clock() >= deadline:
            raise ModelVersionNotReady(f"{name} version {version} is still {status} after {int(timeout)} s")
        sleep(poll)


def alias_version(client: RegistryClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to now, or ``None`` when the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # A deleted alias answers RESOURCE_DOES_NOT_EXIST (sqlite/OSS) or INVALID_PARAMETER_VALUE
        # (Databricks); anything else (permissions, outage) must not pass as "superseded".
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def record_tags(client: RegistryClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set each non-empty tag on the model version, truncating long values."""
    for key, value in tags.items():
        if value:
            client.set_model_version_tag(name, version, key, _truncate(value))


def _truncate(value: str) -> str:
    return value if len(value) <= MAX_TAG_VALUE else value[: MAX_TAG_VALUE - 1] + "…"

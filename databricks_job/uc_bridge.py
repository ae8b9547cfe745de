"""``relay-uc-bridge``: send the relay an MLflow-format event for a Unity Catalog model.

Run it as a Databricks job task (see ``uc-bridge-job.json`` and docs/databricks.md): it reads
the webhook secret from a Databricks secret scope, looks the model version up in Unity
Catalog, signs the event like an MLflow server and POSTs it. 5xx, 429 and connection errors
are retried with the same delivery id (honouring ``Retry-After``); a 4xx fails the task.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from databricks_job.errors import DeliveryFailed, JobError, ParameterError
from databricks_job.uc_event import (
    SUPPORTED_EVENTS,
    SignedRequest,
    alias_created_data,
    build_signed_request,
    delivery_id_for,
    version_created_data,
)

_log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 60.0


def post_signed(
    client: httpx.Client,
    url: str,
    request: SignedRequest,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """POST until the relay answers 2xx/3xx; return that response.

    Raises:
        DeliveryFailed: a 4xx other than 429 (not retried: the request itself is wrong), or
            still 5xx/429/unreachable after ``attempts`` tries.
    """
    last = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            response = client.post(url, content=request.body, headers=request.headers)
        except httpx.TransportError as exc:
            last, wait = f"{type(exc).__name__}: {exc}", _backoff(attempt)
        else:
            if response.status_code < 400:
                return response
            if response.status_code != 429 and response.status_code < 500:
                raise DeliveryFailed(
                    f"relay refused delivery {request.delivery_id}: HTTP {response.status_code} {response.text[:300]}"
                )
            last = f"HTTP {response.status_code}"
            wait = retry_after_seconds(response.headers.get("Retry-After")) or _backoff(attempt)
        if attempt < attempts:
            _log.warning("delivery %s: %s; retrying in %.0f s", request.delivery_id, last, wait)
            sleep(wait)
    raise DeliveryFailed(f"relay unavailable for delivery {request.delivery_id} after {attempts} tries: {last}")


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_SECONDS)


def _backoff(attempt: int) -> float:
    return float(2 ** (attempt - 1))


def event_data(event: str, ns: argparse.Namespace, registry: Any) -> dict[str, object]:
    """Fill the event's ``data`` from the arguments and the registry.

    Raises:
        ParameterError: a field the event needs is missing.
    """
    name, version, alias = ns.model_name, ns.model_version, ns.alias
    if not name:
        raise ParameterError("--model-name is required")
    if event == "model_version_alias.created":
        if not alias:
            raise ParameterError("--alias is required for model_version_alias.created")
        # A trigger may only know the alias; the relay needs the version it points to.
        version = version or str(registry.get_model_version_by_alias(name, alias).version)
        return alias_created_data(name=name, alias=alias, version=version)
    if not version:
        raise ParameterError("--model-version is required for model_version.created")
    mv = registry.get_model_version(name, version)
    return version_created_data(
        name=name, version=version, source=mv.source, run_id=mv.run_id or None,
        tags=dict(mv.tags or {}), description=mv.description or None,
    )  # fmt: skip


def read_scope_secret(scope: str, key: str, *, workspace: Any = None) -> str:
    """Read a secret from a Databricks secret scope with the job's own identity."""
    if workspace is None:
        from databricks.sdk import WorkspaceClient

        workspace = WorkspaceClient()
    return str(workspace.dbutils.secrets.get(scope=scope, key=key))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-uc-bridge", description="Send the relay an MLflow-format event for a Unity Catalog model."
    )
    parser.add_argument(
        "--relay-url", required=True, help="https://<app>.azurewebsites.net/api/MLflowWebHookTransition"
    )
    parser.add_argument("--event", choices=SUPPORTED_EVENTS, default="model_version_alias.created")
    parser.add_argument("--model-name", default="", help="catalog.schema.model")
    parser.add_argument("--model-version", default="")
    parser.add_argument("--alias", default="")
    parser.add_argument("--secret-scope", required=True)
    parser.add_argument("--secret-key", default="mlflow-webhook-secret")
    parser.add_argument("--job-run-id", default="", help="{{job.run_id}}: keeps the delivery id stable on retry")
    parser.add_argument("--registry-uri", default="databricks-uc")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    registry: Any = None,
    secret_provider: Callable[[str, str], str] = read_scope_secret,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Emit one event; return 0 when the relay accepted it, non-zero otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if registry is None:
            from mlflow import MlflowClient

            registry = MlflowClient(registry_uri=ns.registry_uri)
        data = event_data(ns.event, ns, registry)
        request = build_signed_request(
            ns.event, data,
            secret=secret_provider(ns.secret_scope, ns.secret_key),
            delivery_id=delivery_id_for(ns.event, data, job_run_id=ns.job_run_id),
            now=datetime.now(UTC),
        )  # fmt: skip
        with httpx.Client(timeout=ns.timeout, transport=transport) as client:
            response = post_signed(client, ns.relay_url, request, sleep=sleep)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"delivered {ns.event} for {_describe(data)} as {request.delivery_id}: HTTP {response.status_code}")
    print(response.text[:1000])
    return 0


def _describe(data: Mapping[str, object]) -> str:
    return " ".join(f"{k}={data[k]}" for k in ("name", "version", "alias") if k in data)


if __name__ == "__main__":
    sys.exit(main())

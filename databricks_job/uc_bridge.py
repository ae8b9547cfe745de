"""``relay-uc-bridge``: send the relay MLflow-format events for Unity Catalog models.

Run it as a Databricks job task (see ``uc-bridge-job.json`` and docs/databricks.md): it reads
the webhook secret from a Databricks secret scope, looks the model up in Unity Catalog, signs
each event like an MLflow server and POSTs it. Two ways to say what changed:

- ``--model-updates JSON``: the batch a model update trigger passes
  (``{{job.trigger.model.updates}}``); one delivery per update, every update tried, the task
  fails naming each update that did not get through.
- ``--event``/``--model-name``/``--model-version``/``--alias``: one event, e.g. as the last
  task of an MLflow 3 deployment job.

5xx, 429 and connection errors are retried with the same bytes and delivery id (honouring
``Retry-After``); another 4xx is not retried.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from databricks_job.errors import DeliveryFailed, JobError, ParameterError
from databricks_job.uc_event import (
    SUPPORTED_EVENTS,
    SignedRequest,
    alias_created_data,
    build_signed_request,
    delivery_id_for,
    derived_delivery_id,
    registered_model_created_data,
    version_created_data,
)
from databricks_job.uc_updates import (
    ALIAS_CREATED,
    MODEL_CREATED,
    ModelUpdate,
    distinct_updates,
    parse_model_updates,
)
from devops.retry import parse_retry_after

_log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 60.0

Post = Callable[[SignedRequest], httpx.Response]


def post_signed(
    client: httpx.Client,
    url: str,
    request: SignedRequest,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
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
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=clock())
            wait = _backoff(attempt) if retry_after is None else min(retry_after, MAX_RETRY_AFTER_SECONDS)
        if attempt < attempts:
            _log.warning("delivery %s: %s; retrying in %.0f s", request.delivery_id, last, wait)
            sleep(wait)
    raise DeliveryFailed(f"relay unavailable for delivery {request.delivery_id} after {attempts} tries: {last}")


def _backoff(attempt: int) -> float:
    return float(2 ** (attempt - 1))


def event_data(event: str, *, name: str, version: str | None, alias: str | None, registry: Any) -> dict[str, object]:
    """Fill the event's ``data`` from what changed and from the registry.

    Raises:
        ParameterError: a field the event needs is missing.
    """
    if not name:
        raise ParameterError("--model-name is required")
    if event == ALIAS_CREATED:
        if not alias:
            raise ParameterError("--alias is required for model_version_alias.created")
        # A caller may only know the alias; the relay needs the version it points to.
        version = version or str(registry.get_model_version_by_alias(name, alias).version)
        return alias_created_data(name=name, alias=alias, version=version)
    if event == MODEL_CREATED:
        model = registry.get_registered_model(name)
        return registered_model_created_data(
            name=name, tags=dict(model.tags or {}), description=model.description or None
        )
    if not version:
        raise ParameterError("--model-version is required for model_version.created")
    mv = registry.get_model_version(name, version)
    return version_created_data(
        name=name,
        version=version,
        source=mv.source,
        run_id=mv.run_id or None,
        tags=dict(mv.tags or {}),
        description=mv.description or None,
    )


def _answer(response: httpx.Response) -> str:
    """``HTTP 200 triggered``: the status code and the relay's own status, when it gave one."""
    try:
        status = response.json().get("status")
    except (ValueError, AttributeError):
        status = None
    return f"HTTP {response.status_code}" + (f" {status}" if isinstance(status, str) else "")


def deliver_updates(
    updates: Sequence[ModelUpdate], *, registry: Any, secret: str, job_run_id: str, post: Post
) -> list[tuple[ModelUpdate, str]]:
    """Send one event per distinct update, every one of them; return ``(update, failure)`` pairs.

    Each event is signed just before it is sent, so a long batch never goes stale.
    """
    expected = _expected_errors()
    failures = []
    for update in distinct_updates(updates):
        try:
            data = event_data(
                update.event, name=update.full_name, version=update.version, alias=update.alias, registry=registry
            )
            delivery_id = derived_delivery_id(update.event, data, job_run_id=job_run_id)
            request = build_signed_request(
                update.event, data, secret=secret, delivery_id=delivery_id, now=datetime.now(UTC)
            )
            response = post(request)
        except expected as exc:
            reason = _first_line(exc)
            print(f"not delivered {update.event} for {update.describe()}: {reason}", file=sys.stderr)
            failures.append((update, reason))
            continue
        print(f"delivered {update.event} for {update.describe()} as {delivery_id}: {_answer(response)}")
    return failures


def read_scope_secret(scope: str, key: str, *, workspace: Any = None) -> str:
    """Read a secret from a Databricks secret scope with the job's own identity."""
    if workspace is None:
        from databricks.sdk import WorkspaceClient

        workspace = WorkspaceClient()
    return str(workspace.dbutils.secrets.get(scope=scope, key=key))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-uc-bridge", description="Send the relay MLflow-format events for Unity Catalog models."
    )
    parser.add_argument(
        "--relay-url", required=True, help="https://<app>.azurewebsites.net/api/MLflowWebHookTransition"
    )
    parser.add_argument("--model-updates", default="", help="{{job.trigger.model.updates}}: a trigger's batch")
    parser.add_argument("--event", choices=SUPPORTED_EVENTS, default="model_version_alias.created")
    parser.add_argument("--model-name", default="", help="catalog.schema.model")
    parser.add_argument("--model-version", default="")
    parser.add_argument("--alias", default="")
    parser.add_argument("--secret-scope", required=True)
    parser.add_argument("--secret-key", default="mlflow-webhook-secret")
    parser.add_argument("--job-run-id", default="", help="{{job.run_id}}: keeps delivery ids stable on repair")
    parser.add_argument("--registry-uri", default="databricks-uc")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    return parser


def _batch(ns: argparse.Namespace) -> list[ModelUpdate] | None:
    """The trigger's updates, or None when the single-event flags say what changed."""
    if not ns.model_updates.strip():
        return None
    if ns.model_name or ns.model_version or ns.alias:
        raise ParameterError("give --model-updates or --model-name/--model-version/--alias, not both")
    return parse_model_updates(ns.model_updates)


def _expected_errors() -> tuple[type[Exception], ...]:
    """What a registry lookup or a delivery raises on purpose: reported in one line, no traceback."""
    from mlflow.exceptions import MlflowException

    return (JobError, MlflowException, OSError)


def main(
    argv: Sequence[str] | None = None,
    *,
    registry: Any = None,
    secret_provider: Callable[[str, str], str] = read_scope_secret,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Emit the event(s); return 0 when the relay accepted every one, non-zero otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        updates = _batch(ns)
        if updates == []:
            print("no model updates in this run: nothing to deliver")
            return 0
        if registry is None:
            from mlflow import MlflowClient

            registry = MlflowClient(registry_uri=ns.registry_uri)
        secret = secret_provider(ns.secret_scope, ns.secret_key)
        with httpx.Client(timeout=ns.timeout, transport=transport) as client:
            post = functools.partial(post_signed, client, ns.relay_url, sleep=sleep)
            if updates is None:
                return _send_one(ns, registry, secret, post)
            failures = deliver_updates(updates, registry=registry, secret=secret, job_run_id=ns.job_run_id, post=post)
    except _expected_errors() as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, JobError) else 1
    if failures:
        named = "; ".join(f"{update.describe()} ({reason})" for update, reason in failures)
        total = len(distinct_updates(updates))
        print(f"error: {len(failures)} of {total} updates not delivered: {named}", file=sys.stderr)
        return DeliveryFailed.exit_code
    return 0


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _send_one(ns: argparse.Namespace, registry: Any, secret: str, post: Post) -> int:
    data = event_data(
        ns.event, name=ns.model_name, version=ns.model_version or None, alias=ns.alias or None, registry=registry
    )
    request = build_signed_request(
        ns.event,
        data,
        secret=secret,
        delivery_id=delivery_id_for(ns.event, data, job_run_id=ns.job_run_id),
        now=datetime.now(UTC),
    )
    response = post(request)
    described = " ".join(f"{k}={data[k]}" for k in ("name", "version", "alias") if k in data)
    print(f"delivered {ns.event} for {described} as {request.delivery_id}: {_answer(response)}")
    print(response.text[:1000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

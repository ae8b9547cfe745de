"""``mlflow-relay sync``: make a sender's registrations match ``routes.yaml``.

``--platform mlflow``: one MLflow 3 webhook for the events the rules can match.
``--platform databricks``: workspace registry webhooks, per model or one registry-wide.
``--platform unity-catalog``: one bridge job per model update trigger (scope and aliases from the rules).

The plan is printed as a diff (``+`` create, ``~`` update, ``=`` unchanged, ``-`` not needed), then
applied; ``--dry-run`` stops after the plan, ``--prune`` deletes what points at this relay and no
rule needs. A second run changes nothing and says so. The webhook secret (Key Vault, or
``WEBHOOK_SECRET``) is read only when a webhook is created or updated, and never printed.
Errors are one line; an unreachable server fails within seconds.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from relay_tools import sync_jobs
from relay_tools.sync_plan import Change, carry_out
from relay_tools.sync_rules import databricks_webhooks, mlflow_events, uc_triggers
from relay_tools.sync_webhooks import plan_webhooks
from webhook.errors import ConfigurationError
from webhook.rules import RouteRules, parse_rules

PLATFORMS = ("mlflow", "databricks", "unity-catalog")
REPO_ROOT = Path(__file__).resolve().parent.parent
# Bounds for an unreachable server: MLflow retries 7 times with backoff (minutes), the SDK for 300 s.
MLFLOW_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
DATABRICKS_RETRY_TIMEOUT_SECONDS = 3  # spent twice on an unreachable host: its metadata, then the call
DATABRICKS_HTTP_TIMEOUT_SECONDS = 8


@contextmanager
def bounded_mlflow_http() -> Iterator[None]:
    """MLflow's HTTP retry bounds for this command (the caller's own settings win)."""
    added = [name for name in MLFLOW_HTTP_BOUNDS if name not in os.environ]
    os.environ.update({name: MLFLOW_HTTP_BOUNDS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def default_client(args: argparse.Namespace) -> Any:
    """The platform's client from its default configuration: ``MlflowClient`` or ``WorkspaceClient``."""
    if args.platform == "mlflow":
        from mlflow import MlflowClient

        uri = args.tracking_uri or None
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    # Host and credentials: the SDK's default chain (environment, profile, Azure CLI, workload identity).
    config = Config(
        retry_timeout_seconds=DATABRICKS_RETRY_TIMEOUT_SECONDS,
        http_timeout_seconds=DATABRICKS_HTTP_TIMEOUT_SECONDS,
        product="mlflow-devops-relay",
        product_version=_version(),
    )
    return WorkspaceClient(config=config)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow-devops-relay")
    except PackageNotFoundError:
        return "0.0.0"


def load_rules(args: argparse.Namespace) -> RouteRules:
    """Raises ``ConfigurationError`` for a missing or invalid rules file."""
    path = Path(args.rules or os.environ.get("ROUTES_FILE") or REPO_ROOT / "routes.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"rules file {str(path)!r} cannot be read ({exc.strerror})") from None
    return parse_rules(text, origin=path.name)


def plan(
    args: argparse.Namespace, rules: RouteRules, client: Any, secret: Callable[[], str]
) -> tuple[list[Change], list[str]]:
    """The platform's changes and the notes on rules that cannot be registered."""
    from relay_tools.webhook_backends import DEFAULT_NAME, DatabricksWebhooks, MlflowWebhooks

    if args.platform == "mlflow":
        events, notes = mlflow_events(rules, workspace=os.environ.get("MLFLOW_WORKSPACE") or None)
        backend = MlflowWebhooks(client)
        wanted = {"": events} if events else {}
        return plan_webhooks(wanted, backend, url=args.url, name=args.name or DEFAULT_NAME, secret=secret), notes
    if args.platform == "databricks":
        wanted, notes = databricks_webhooks(rules)
        return plan_webhooks(wanted, DatabricksWebhooks(client), url=args.url, name="", secret=secret), notes
    triggers, notes = uc_triggers(rules)
    notes += [
        f"the {t.condition} trigger watches the whole metastore: it needs a metastore admin"
        for t in triggers
        if not t.securable
    ]
    template = sync_jobs.load_job_template(Path(args.job_spec))
    return sync_jobs.plan_jobs(triggers, sync_jobs.BridgeJobs(client), template=template, url=args.url), notes


def _expected_errors() -> tuple[type[Exception], ...]:
    """What the rules, the platforms and the network raise on purpose: one line each, no traceback."""
    from webhook.errors import RelayError

    errors: list[type[Exception]] = [RelayError, OSError, ValueError]
    try:
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)
    except ImportError:
        pass
    try:
        from databricks.sdk.errors.base import DatabricksError

        errors.append(DatabricksError)
    except ImportError:
        pass
    return tuple(errors)


def cmd_sync(
    args: argparse.Namespace,
    *,
    secret_provider: Callable[[], str] | None = None,
    client_factory: Callable[[argparse.Namespace], Any] = default_client,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Plan and (unless ``--dry-run``) apply; 0 when done, 1 for a platform error, 2 for the rules."""
    out, err = out or sys.stdout, err or sys.stderr
    if secret_provider is None:
        from relay_tools.webhook_secret import read_webhook_secret

        secret_provider = read_webhook_secret
    secret = functools.cache(secret_provider)
    if not getattr(args, "verbose", False):
        logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings; the error line says enough
        logging.getLogger("databricks.sdk").setLevel(logging.ERROR)
    client = None
    try:
        rules = load_rules(args)
        with bounded_mlflow_http():
            client = client_factory(args)
            changes, notes = plan(args, rules, client, secret)
            for note in notes:
                out.write(f"note: {note}\n")
            carry_out(changes, dry_run=args.dry_run, prune=args.prune, out=out)
    except ImportError as exc:
        err.write(f'mlflow-relay sync: {exc.name or exc} is not installed: pip install -e ".[databricks]"\n')
        return 1
    except _expected_errors() as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        reason = f"no answer ({reason})" if isinstance(exc, TimeoutError) else reason
        if isinstance(exc, ConfigurationError):  # the rules or the job spec: no server involved
            err.write(f"mlflow-relay sync: {reason}\n")
            return 2
        err.write(f"mlflow-relay sync --platform {args.platform} ({_where(args, client)}): {reason}\n")
        return 1
    return 0


def _where(args: argparse.Namespace, client: Any) -> str:
    """The server an error line names (never a credential: URLs and hosts only)."""
    if args.platform == "mlflow":
        return args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "default tracking URI"
    host = getattr(getattr(client, "config", None), "host", None) or os.environ.get("DATABRICKS_HOST")
    return str(host or "default Databricks workspace")


def add_sync_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    client_factory: Callable[[argparse.Namespace], Any] = default_client,
) -> None:
    """Add ``sync``; it sets ``func(args) -> int``."""
    sync = subparsers.add_parser("sync", help="make a sender's webhooks or trigger jobs match routes.yaml")
    sync.add_argument("--platform", choices=PLATFORMS, required=True, help="which sender side to make match the rules")
    sync.add_argument("--url", required=True, help="the relay: https://<app>/api/MLflowWebHookTransition")
    sync.add_argument("--rules", default="", help="rules file (default: ROUTES_FILE or routes.yaml)")
    sync.add_argument("--tracking-uri", default="", help="mlflow: the server (default: MLFLOW_TRACKING_URI)")
    sync.add_argument("--name", default="", help="mlflow: the webhook's name (default: mlflow-devops-relay)")
    sync.add_argument(
        "--job-spec",
        default=str(REPO_ROOT / "databricks_job" / "uc-bridge-job.json"),
        help="unity-catalog: the bridge job to copy for each trigger",
    )
    sync.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    sync.add_argument("--prune", action="store_true", help="delete registrations to this relay that no rule needs")
    sync.set_defaults(func=functools.partial(cmd_sync, client_factory=client_factory))

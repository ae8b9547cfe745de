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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from relay_tools import sync_jobs
from relay_tools.sync_rules import databricks_webhooks, mlflow_events, uc_triggers
from webhook.errors import ConfigurationError
from webhook.routing import RouteRules, parse_rules

PLATFORMS = ("mlflow", "databricks", "unity-catalog")
REPO_ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = "Starts Azure DevOps pipelines via mlflow-devops-relay (managed by mlflow-relay sync)"
# Bounds for an unreachable server: MLflow retries 7 times with backoff (minutes), the SDK for 300 s.
MLFLOW_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
DATABRICKS_RETRY_TIMEOUT_SECONDS = 3  # spent twice on an unreachable host: its metadata, then the call
DATABRICKS_HTTP_TIMEOUT_SECONDS = 8
_VERBS = {
    "create": ("+", "create", "created"),
    "update": ("~", "update", "updated"),
    "unchanged": ("=", "unchanged", "unchanged"),
    "extra": ("-", "delete", "deleted"),
}


@dataclass(frozen=True)
class Change:
    """One line of the plan, and how to carry it out (``extra``: the delete ``--prune`` runs)."""

    verb: str  # create | update | unchanged | extra
    what: str
    detail: str = ""
    apply: Callable[[], object] | None = None


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


def _webhook_diff(view: Any, spec: Any) -> str:
    """What an update would change in a registered webhook ("" when it already matches)."""
    changes = []
    if set(view.events) != set(spec.events):
        changes.append(f"events: {','.join(view.events) or '-'} -> {','.join(spec.events)}")
    if view.url != spec.url:
        changes.append(f"url: {view.url} -> {spec.url}")
    if view.status != spec.status:
        changes.append(f"status: {view.status or '-'} -> {spec.status}")
    if view.description != spec.description:
        changes.append("description")
    if spec.name and view.name != spec.name:
        changes.append(f"name: {view.name} -> {spec.name}")
    return "; ".join(changes)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow-devops-relay")
    except PackageNotFoundError:
        return "0.0.0"


def plan_webhooks(
    wanted: dict[str, tuple[str, ...]], backend: Any, *, url: str, name: str, secret: Callable[[], str]
) -> list[Change]:
    """Changes so that each ``wanted`` model ("" = registry-wide) has one webhook to ``url`` with its events.

    Webhooks to ``url`` that no entry needs, and duplicates, are ``extra``.
    """
    from relay.webhooks_admin import WebhookSpec, same_url

    mine = [w for w in backend.list_all("") if same_url(w.url, url)]
    changes = []
    for model, events in wanted.items():
        spec = WebhookSpec(url=url, events=events, model=model, description=DESCRIPTION, name=name, status="ACTIVE")
        label = "webhook " + (name or model or "(registry-wide)")
        # Keep the webhook closest to the wanted one (no change needed, then our name); the rest are extra.
        current = sorted(
            (w for w in mine if w.model == model), key=lambda w: (bool(_webhook_diff(w, spec)), w.name != name)
        )
        mine = [w for w in mine if w.model != model] + current[1:]
        if not current:
            create = functools.partial(_with_secret, backend.create, spec, secret)
            changes.append(Change("create", label, f"events={','.join(events)}", create))
            continue
        diff = _webhook_diff(current[0], spec)
        update = functools.partial(_with_secret, functools.partial(backend.update, current[0].id), spec, secret)
        detail = diff or f"events={','.join(events)}"
        changes.append(Change("update" if diff else "unchanged", f"{label} {current[0].id}", detail, update))
    for hook in mine:
        label = f"webhook {hook.name or hook.model or '(registry-wide)'} {hook.id}"
        changes.append(
            Change("extra", label, f"events={','.join(hook.events)}", functools.partial(backend.delete, hook.id))
        )
    return changes


def _with_secret(call: Callable[..., object], spec: Any, secret: Callable[[], str]) -> object:
    return call(spec, secret=secret())


def plan_jobs(triggers: list[Any], jobs: sync_jobs.BridgeJobs, *, template: dict[str, Any], url: str) -> list[Change]:
    """Changes so that each trigger has one bridge job; managed bridge jobs no trigger needs are ``extra``."""
    existing = jobs.managed(url)
    changes = []
    for trigger in triggers:
        desired = sync_jobs.bridge_job_settings(template, trigger, relay_url=url)
        key = (trigger.condition, trigger.securable)
        current = [j for j in existing if sync_jobs.trigger_key(j.settings) == key]
        existing = [j for j in existing if sync_jobs.trigger_key(j.settings) != key] + current[1:]
        label = f"job {sync_jobs.job_label(trigger)}"
        if not current:
            changes.append(Change("create", label, "", functools.partial(jobs.create, desired)))
            continue
        diff = sync_jobs.differing_settings(current[0].settings, desired)
        reset = functools.partial(jobs.reset, current[0].job_id, desired)
        detail = f"settings: {', '.join(diff)}" if diff else ""
        changes.append(Change("update" if diff else "unchanged", f"{label} ({current[0].job_id})", detail, reset))
    for job in existing:
        label = f"job {job.settings.get('name', '')} ({job.job_id})"
        changes.append(Change("extra", label, "", functools.partial(jobs.delete, job.job_id)))
    return changes


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
    from relay.webhooks_admin import DEFAULT_NAME, DatabricksWebhooks, MlflowWebhooks

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
    return plan_jobs(triggers, sync_jobs.BridgeJobs(client), template=template, url=args.url), notes


def carry_out(changes: list[Change], *, dry_run: bool, prune: bool, out: TextIO) -> None:
    """Print each change as a diff line and, unless ``dry_run``, apply it; then the summary line."""
    done = {"create": 0, "update": 0, "extra": 0}
    for change in changes:
        sign, verb, past = _VERBS[change.verb]
        acts = change.verb in ("create", "update") or (change.verb == "extra" and prune)
        if change.verb == "extra" and not prune:
            shown = "not needed (kept; --prune deletes it)"
        elif dry_run and acts:
            shown = f"would {verb}"
        else:
            shown = past
        if acts and not dry_run and change.apply is not None:
            change.apply()
        if acts:
            done[change.verb] += 1
        out.write(f"{sign} {shown} {change.what}" + (f"  {change.detail}" if change.detail else "") + "\n")
    counts = f"{done['create']} to create, {done['update']} to update, {done['extra']} to delete"
    if not any(done.values()):
        out.write("dry run: no change needed\n" if dry_run else "no change\n")
    elif dry_run:
        out.write(f"dry run: {counts}; nothing was changed\n")
    else:
        out.write(f"{done['create']} created, {done['update']} updated, {done['extra']} deleted\n")


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
        from relay.webhook_secret import read_webhook_secret

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
    sync.add_argument("--platform", choices=PLATFORMS, required=True)
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

"""``mlflow-relay webhooks create|list|test|delete``: registry webhooks as code.

Two platforms behind one small interface: Databricks workspace registry webhooks
(``databricks-sdk`` ``model_registry``; host and auth from the SDK's default config, e.g.
``DATABRICKS_HOST`` plus Azure CLI auth) and open-source MLflow 3 webhooks (``MlflowClient``;
``MLFLOW_TRACKING_URI`` or ``--tracking-uri``). ``create`` is idempotent: a webhook already
pointing at the same URL (and model, on Databricks) is updated, secret included, instead of
a second one being added. The secret comes from the caller's ``secret_provider`` and is
never printed. ``databricks-sdk``/``mlflow`` are imported lazily: the Function App never
loads them.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from relay_tools.webhook_backends import (
    DEFAULT_EVENTS,
    DEFAULT_NAME,
    PLATFORMS,
    DatabricksWebhooks,
    MlflowWebhooks,
    WebhookBackend,
    WebhookSpec,
    WebhookView,
    find_matches,
)

__all__ = ["DatabricksWebhooks", "MlflowWebhooks", "add_webhooks_parser", "default_backend"]

BackendFactory = Callable[[argparse.Namespace], WebhookBackend]


def default_backend(args: argparse.Namespace) -> WebhookBackend:
    """Build the platform's client from its default configuration (``relay_tools.platform_clients``)."""
    from relay_tools.platform_clients import databricks_workspace, mlflow_client, tracking_uri

    if args.platform == "databricks":
        return DatabricksWebhooks(databricks_workspace())
    return MlflowWebhooks(mlflow_client(tracking_uri(args)))


def _target(args: argparse.Namespace) -> str:
    if args.platform == "databricks":
        return os.environ.get("DATABRICKS_HOST", "")
    return str(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "")


def _guarded(handler: Callable[..., int], args: argparse.Namespace, **kwargs: Any) -> int:
    """Run ``handler`` with the platform's errors turned into one line and an exit code."""
    from relay_tools.platform_clients import platform_errors

    with platform_errors(args.platform, _target(args)):
        return handler(args, **kwargs)


def _read_webhook_secret() -> str:
    from relay_tools.webhook_secret import read_webhook_secret

    return read_webhook_secret()


def _spec(args: argparse.Namespace) -> WebhookSpec:
    events = tuple(e.strip() for e in (args.events or "").split(",") if e.strip())
    model = args.model if args.platform == "databricks" else ""
    return WebhookSpec(
        url=args.url,
        events=events or DEFAULT_EVENTS[args.platform],
        model=model or "",
        description=args.description or "",
        name=args.name,
    )


def _line(view: WebhookView) -> str:
    return f"{view.id}\t{view.status}\t{view.model or '*'}\t{view.url}\t{','.join(view.events)}"


def cmd_create(
    args: argparse.Namespace,
    *,
    secret_provider: Callable[[], str],
    backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:
    """Create the relay's webhook, or update the one already pointing at the same URL."""
    out = out or sys.stdout
    spec, backend = _spec(args), backend_factory(args)
    if args.platform == "mlflow" and args.model:
        out.write("note: MLflow webhooks are registry-wide; filter by model in the relay's rules\n")
    matches = find_matches(backend.list_all(spec.model), spec)
    secret = secret_provider()
    if matches:
        view = backend.update(matches[0].id, spec, secret=secret)
        out.write(f"updated\t{_line(view)}\n")
        for extra in matches[1:]:
            out.write(f"warning: duplicate webhook {extra.id} for the same URL; remove it with `delete`\n")
    else:
        view = backend.create(spec, secret=secret)
        out.write(f"created\t{_line(view)}\n")
    return 0


def cmd_list(
    args: argparse.Namespace,
    *,
    secret_provider: Callable[[], str],
    backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:
    """List webhooks (id, status, model, URL, events); secrets are never returned by either API."""
    out = out or sys.stdout
    for view in backend_factory(args).list_all(args.model if args.platform == "databricks" else ""):
        out.write(_line(view) + "\n")
    return 0


def cmd_test(
    args: argparse.Namespace,
    *,
    secret_provider: Callable[[], str],
    backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:
    """Ask the platform to send a test delivery and show what the relay answered (exit 1 unless 2xx/3xx)."""
    out = out or sys.stdout
    outcome = backend_factory(args).test(args.id, args.event or "")
    if outcome.status_code is None:
        out.write(f"test delivery failed: {outcome.error or 'no response'}\n")
        return 1
    out.write(f"relay answered HTTP {outcome.status_code}\n{outcome.body}\n")
    return 0 if outcome.ok else 1


def cmd_delete(
    args: argparse.Namespace,
    *,
    secret_provider: Callable[[], str],
    backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:
    """Delete one webhook by id."""
    backend_factory(args).delete(args.id)
    (out or sys.stdout).write(f"deleted\t{args.id}\n")
    return 0


def add_webhooks_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    backend_factory: BackendFactory = default_backend,
    secret_provider: Callable[[], str] = _read_webhook_secret,
) -> None:
    """Add ``webhooks create|list|test|delete``; each sets ``func(args) -> int``."""
    webhooks = subparsers.add_parser("webhooks", help="register the relay's registry webhooks", description=__doc__)
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--platform",
        choices=PLATFORMS,
        required=True,
        help="databricks: workspace model registry (DATABRICKS_HOST + az login); "
        "mlflow: open-source MLflow 3 tracking server",
    )
    common.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow only: the tracking server, e.g. https://mlflow.example.com "
        "(default: MLFLOW_TRACKING_URI; required)",
    )
    common.add_argument("--model", default="", help="Databricks: registered model (default: registry-wide)")
    commands: dict[str, tuple[Callable[..., int], str]] = {
        "create": (cmd_create, "create or update the relay's webhook"),
        "list": (cmd_list, "list webhooks"),
        "test": (cmd_test, "send a test delivery and show the relay's answer"),
        "delete": (cmd_delete, "delete a webhook"),
    }
    for name, (handler, help_text) in commands.items():
        sub = actions.add_parser(name, parents=[common], help=help_text)
        if name == "create":
            sub.add_argument("--url", required=True, help="https://<app>/api/MLflowWebHookTransition")
            sub.add_argument("--events", default="", help="comma-separated; default per platform")
            sub.add_argument(
                "--description",
                default="Starts Azure DevOps pipelines via mlflow-devops-relay",
                help="the webhook's description, shown by the platform",
            )
            sub.add_argument("--name", default=DEFAULT_NAME, help="MLflow webhook name")
        if name in ("test", "delete"):
            sub.add_argument("--id", required=True, help="webhook id (see `list`)")
        if name == "test":
            sub.add_argument("--event", default="", help="event to simulate (default: the platform's choice)")
        sub.set_defaults(
            func=functools.partial(_guarded, handler, backend_factory=backend_factory, secret_provider=secret_provider)
        )

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
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

PLATFORMS = ("databricks", "mlflow")
DEFAULT_EVENTS = {
    "databricks": ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"),
    # Not model_version_tag.set: the Databricks job tags versions, which would loop back here.
    "mlflow": ("model_version.created", "model_version_alias.created"),
}
DEFAULT_NAME = "mlflow-devops-relay"


@dataclass(frozen=True)
class WebhookSpec:
    """The webhook ``create`` wants to exist (the secret travels separately)."""

    url: str
    events: tuple[str, ...]
    model: str = ""
    description: str = ""
    name: str = DEFAULT_NAME
    status: str = ""  # "ACTIVE" makes an update re-enable the webhook; "" leaves it as it is


@dataclass(frozen=True)
class WebhookView:
    """A registered webhook as shown to the user: never holds the secret."""

    id: str
    url: str
    events: tuple[str, ...]
    model: str
    status: str
    description: str = ""
    name: str = ""


@dataclass(frozen=True)
class TestOutcome:
    """What the relay answered to the platform's test delivery."""

    status_code: int | None
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and self.status_code < 400


class WebhookBackend(Protocol):
    def list_all(self, model: str) -> list[WebhookView]: ...
    def create(self, spec: WebhookSpec, *, secret: str) -> WebhookView: ...
    def update(self, webhook_id: str, spec: WebhookSpec, *, secret: str) -> WebhookView: ...
    def test(self, webhook_id: str, event: str) -> TestOutcome: ...
    def delete(self, webhook_id: str) -> None: ...


BackendFactory = Callable[[argparse.Namespace], WebhookBackend]


def same_url(a: str, b: str) -> bool:
    """Two webhook URLs that reach the same relay (a trailing slash or the case of the host aside)."""
    return a.rstrip("/").casefold() == b.rstrip("/").casefold()


def find_matches(existing: Sequence[WebhookView], spec: WebhookSpec) -> list[WebhookView]:
    """Webhooks ``spec`` would duplicate: same URL and, where the platform scopes by model, same model."""
    return [w for w in existing if same_url(w.url, spec.url) and w.model == spec.model]


class DatabricksWebhooks:
    """Databricks workspace registry webhooks through ``WorkspaceClient().model_registry``."""

    def __init__(self, workspace: Any) -> None:
        self._api = workspace.model_registry

    def list_all(self, model: str) -> list[WebhookView]:
        return [self._view(w) for w in self._api.list_webhooks(model_name=model or None)]

    def create(self, spec: WebhookSpec, *, secret: str) -> WebhookView:
        response = self._api.create_webhook(
            events=self._events(spec.events), description=spec.description or None,
            http_url_spec=self._url_spec(spec.url, secret), model_name=spec.model or None,
        )  # fmt: skip
        return self._view(response.webhook)

    def update(self, webhook_id: str, spec: WebhookSpec, *, secret: str) -> WebhookView:
        from databricks.sdk.service.ml import RegistryWebhookStatus

        response = self._api.update_webhook(
            id=webhook_id, events=self._events(spec.events), description=spec.description or None,
            http_url_spec=self._url_spec(spec.url, secret),
            status=RegistryWebhookStatus(spec.status) if spec.status else None,
        )  # fmt: skip
        return self._view(response.webhook)

    def test(self, webhook_id: str, event: str) -> TestOutcome:
        from databricks.sdk.service.ml import RegistryWebhookEvent

        chosen = RegistryWebhookEvent(event) if event else None
        response = self._api.test_registry_webhook(id=webhook_id, event=chosen)
        return TestOutcome(status_code=response.status_code, body=response.body or "")

    def delete(self, webhook_id: str) -> None:
        self._api.delete_webhook(id=webhook_id)

    @staticmethod
    def _events(events: Sequence[str]) -> list[Any]:
        from databricks.sdk.service.ml import RegistryWebhookEvent

        return [RegistryWebhookEvent(e) for e in events]

    @staticmethod
    def _url_spec(url: str, secret: str) -> Any:
        from databricks.sdk.service.ml import HttpUrlSpec

        return HttpUrlSpec(url=url, secret=secret, enable_ssl_verification=True)

    @staticmethod
    def _view(hook: Any) -> WebhookView:
        return WebhookView(
            id=hook.id or "", url=hook.http_url_spec.url if hook.http_url_spec else "",
            events=tuple(e.value for e in hook.events or ()), model=hook.model_name or "",
            status=hook.status.value if hook.status else "", description=hook.description or "",
        )  # fmt: skip


class MlflowWebhooks:
    """Open-source MLflow 3 webhooks through ``MlflowClient``; they are registry-wide (no model)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def list_all(self, model: str) -> list[WebhookView]:
        views: list[WebhookView] = []
        token = None
        while True:
            page = self._client.list_webhooks(max_results=100, page_token=token)
            views.extend(self._view(w) for w in page)
            token = page.token
            if not token:
                return views

    def create(self, spec: WebhookSpec, *, secret: str) -> WebhookView:
        hook = self._client.create_webhook(
            name=spec.name, url=spec.url, events=list(spec.events),
            description=spec.description or None, secret=secret,
        )  # fmt: skip
        return self._view(hook)

    def update(self, webhook_id: str, spec: WebhookSpec, *, secret: str) -> WebhookView:
        hook = self._client.update_webhook(
            webhook_id, name=spec.name, url=spec.url, events=list(spec.events),
            description=spec.description or None, secret=secret, status=spec.status or None,
        )  # fmt: skip
        return self._view(hook)

    def test(self, webhook_id: str, event: str) -> TestOutcome:
        try:
            result = self._client.test_webhook(webhook_id, event or None)
        except NotImplementedError:
            # A database store (no tracking server) has no test endpoint; deliver the
            # server's own test payload from here, exactly as the endpoint would.
            from mlflow.entities.webhook import WebhookEvent
            from mlflow.webhooks.delivery import test_webhook

            hook = self._client.get_webhook(webhook_id)
            result = test_webhook(hook, WebhookEvent.from_str(event) if event else None)  # type: ignore[arg-type]
        return TestOutcome(result.response_status, result.response_body or "", result.error_message or "")

    def delete(self, webhook_id: str) -> None:
        self._client.delete_webhook(webhook_id)

    @staticmethod
    def _view(hook: Any) -> WebhookView:
        return WebhookView(
            id=hook.webhook_id, url=hook.url, events=tuple(str(e) for e in hook.events),
            model="", status=str(hook.status), description=hook.description or "", name=hook.name or "",
        )  # fmt: skip


def default_backend(args: argparse.Namespace) -> WebhookBackend:
    """Build the platform's client from its default configuration."""
    if args.platform == "databricks":
        from databricks.sdk import WorkspaceClient

        return DatabricksWebhooks(WorkspaceClient())
    from mlflow import MlflowClient

    uri = args.tracking_uri or None
    return MlflowWebhooks(MlflowClient(tracking_uri=uri, registry_uri=uri))


def _spec(args: argparse.Namespace) -> WebhookSpec:
    events = tuple(e.strip() for e in (args.events or "").split(",") if e.strip())
    model = args.model if args.platform == "databricks" else ""
    return WebhookSpec(
        url=args.url, events=events or DEFAULT_EVENTS[args.platform], model=model or "",
        description=args.description or "", name=args.name,
    )  # fmt: skip


def _line(view: WebhookView) -> str:
    return f"{view.id}\t{view.status}\t{view.model or '*'}\t{view.url}\t{','.join(view.events)}"


def cmd_create(
    args: argparse.Namespace, *, secret_provider: Callable[[], str], backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:  # fmt: skip
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
    args: argparse.Namespace, *, secret_provider: Callable[[], str], backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:  # fmt: skip
    """List webhooks (id, status, model, URL, events); secrets are never returned by either API."""
    out = out or sys.stdout
    for view in backend_factory(args).list_all(args.model if args.platform == "databricks" else ""):
        out.write(_line(view) + "\n")
    return 0


def cmd_test(
    args: argparse.Namespace, *, secret_provider: Callable[[], str], backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:  # fmt: skip
    """Ask the platform to send a test delivery and show what the relay answered (exit 1 unless 2xx/3xx)."""
    out = out or sys.stdout
    outcome = backend_factory(args).test(args.id, args.event or "")
    if outcome.status_code is None:
        out.write(f"test delivery failed: {outcome.error or 'no response'}\n")
        return 1
    out.write(f"relay answered HTTP {outcome.status_code}\n{outcome.body}\n")
    return 0 if outcome.ok else 1


def cmd_delete(
    args: argparse.Namespace, *, secret_provider: Callable[[], str], backend_factory: BackendFactory,
    out: TextIO | None = None,
) -> int:  # fmt: skip
    """Delete one webhook by id."""
    backend_factory(args).delete(args.id)
    (out or sys.stdout).write(f"deleted\t{args.id}\n")
    return 0


def add_webhooks_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    backend_factory: BackendFactory = default_backend,
) -> None:
    """Add ``webhooks create|list|test|delete``; each sets ``func(args, *, secret_provider) -> int``."""
    webhooks = subparsers.add_parser("webhooks", help="register the relay's registry webhooks")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--platform", choices=PLATFORMS, required=True)
    common.add_argument("--tracking-uri", default="", help="MLflow only; default MLFLOW_TRACKING_URI")
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
            sub.add_argument("--description", default="Starts Azure DevOps pipelines via mlflow-devops-relay")
            sub.add_argument("--name", default=DEFAULT_NAME, help="MLflow webhook name")
        if name in ("test", "delete"):
            sub.add_argument("--id", required=True, help="webhook id (see `list`)")
        if name == "test":
            sub.add_argument("--event", default="", help="event to simulate (default: the platform's choice)")
        sub.set_defaults(func=functools.partial(handler, backend_factory=backend_factory))

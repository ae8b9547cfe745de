"""The two registry webhook platforms behind one small interface: Databricks workspace registry
webhooks (``WorkspaceClient().model_registry``) and open-source MLflow 3 webhooks
(``MlflowClient``). Views never hold the secret; the secret travels only into ``create`` and
``update``. ``databricks-sdk``/``mlflow`` are imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
            events=self._events(spec.events),
            description=spec.description or None,
            http_url_spec=self._url_spec(spec.url, secret),
            model_name=spec.model or None,
        )
        return self._view(response.webhook)

    def update(self, webhook_id: str, spec: WebhookSpec, *, secret: str) -> WebhookView:
        from databricks.sdk.service.ml import RegistryWebhookStatus

        response = self._api.update_webhook(
            id=webhook_id,
            events=self._events(spec.events),
            description=spec.description or None,
            http_url_spec=self._url_spec(spec.url, secret),
            status=RegistryWebhookStatus(spec.status) if spec.status else None,
        )
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
            id=hook.id or "",
            url=hook.http_url_spec.url if hook.http_url_spec else "",
            events=tuple(e.value for e in hook.events or ()),
            model=hook.model_name or "",
            status=hook.status.value if hook.status else "",
            description=hook.description or "",
        )


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
            name=spec.name,
            url=spec.url,
            events=list(spec.events),
            description=spec.description or None,
            secret=secret,
            status=spec.status or None,
        )
        return self._view(hook)

    def update(self, webhook_id: str, spec: WebhookSpec, *, secret: str) -> WebhookView:
        hook = self._client.update_webhook(
            webhook_id,
            name=spec.name,
            url=spec.url,
            events=list(spec.events),
            description=spec.description or None,
            secret=secret,
            status=spec.status or None,
        )
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
            id=hook.webhook_id,
            url=hook.url,
            events=tuple(str(e) for e in hook.events),
            model="",
            status=str(hook.status),
            description=hook.description or "",
            name=hook.name or "",
        )

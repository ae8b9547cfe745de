"""The webhook side of ``mlflow-relay sync``: one webhook per wanted model ("" = registry-wide).

Works with both platform clients of ``relay_tools.webhooks_admin`` (MLflow 3 webhooks, Databricks
workspace registry webhooks): only webhooks to this relay's URL are considered; the one that
already matches (or carries this sync's name) is kept, updated where it differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from relay_tools.sync_plan import Change

DESCRIPTION = "Starts Azure DevOps pipelines via mlflow-devops-relay (managed by mlflow-relay sync)"


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


def plan_webhooks(
    wanted: dict[str, tuple[str, ...]], backend: Any, *, url: str, name: str, secret: Callable[[], str]
) -> list[Change]:
    """Changes so that each ``wanted`` model ("" = registry-wide) has one webhook to ``url`` with its events.

    Webhooks to ``url`` that no entry needs, and duplicates, are ``extra``.
    """
    from relay_tools.webhook_backends import WebhookSpec, same_url

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

"""``mlflow-relay sync --platform mlflow`` against a real ``mlflow server``, its webhook tested into the relay.

The command runs as a person runs it (``relay_tools.cli.main``), with the webhook secret from
``WEBHOOK_SECRET`` (set by ``start_relay`` for the relay it starts). MLflow's ``test_webhook``
then proves the registered secret is the relay's: the relay verifies the signature before it
answers 200.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from relay_tools.cli import main

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tests.e2e.conftest import MlflowServer, RelayUnderTest

pytestmark = pytest.mark.e2e

RULES = """\
rules:
  - {name: validate, pipeline_id: 7, when: {event: model_version.created, model: "e2e-sync-*"}}
  - {name: champion, pipeline_id: 13, when: {event: model_version_alias.created, alias: champion}}
"""
TAG_RULE = "  - {name: deploy-tag, pipeline_id: 21, when: {event: model_version_tag.set, tag: {key: deploy}}}\n"


def test_sync_creates_changes_nothing_updates_and_prunes(
    mlflow_server: MlflowServer,
    mlflow_client: MlflowClient,
    start_relay: Callable[..., RelayUnderTest],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = f"whsec-e2e-sync-{uuid.uuid4().hex}"
    relay = start_relay(RULES, webhook_secret=secret)
    client = mlflow_client
    others = client.create_webhook(
        name="someone-else", url=f"{relay.base_url}/elsewhere", events=["model_version.created"], secret="theirs"
    )
    rules = tmp_path / "routes.yaml"

    def sync(text: str, *flags: str) -> list[str]:
        rules.write_text(textwrap.dedent(text), encoding="utf-8")
        code = main(
            [
                "sync",
                "--platform",
                "mlflow",
                "--tracking-uri",
                mlflow_server.url,
                "--url",
                relay.webhook_url,
                "--rules",
                str(rules),
                *flags,
            ]
        )
        captured = capsys.readouterr()
        # The relay under test shares this process and may log its own warnings; sync itself says nothing.
        assert code == 0 and "mlflow-relay sync" not in captured.err, captured
        assert secret not in captured.out
        return captured.out.splitlines()

    def relay_hooks() -> list[Any]:
        return [w for w in client.list_webhooks() if w.url == relay.webhook_url]

    def tested_into_the_relay(webhook_id: str) -> dict[str, Any]:
        result = client.test_webhook(webhook_id)
        assert (result.success, result.response_status) == (True, 200), result
        return dict(json.loads(result.response_body or "{}"))

    out = sync(RULES)
    assert out == [
        "+ created webhook mlflow-devops-relay  events=model_version.created,model_version_alias.created",
        "1 created, 0 updated, 0 deleted",
    ]
    (hook,) = relay_hooks()
    assert [str(e) for e in hook.events] == ["model_version.created", "model_version_alias.created"]
    assert (hook.name, str(hook.status)) == ("mlflow-devops-relay", "ACTIVE")
    assert tested_into_the_relay(hook.webhook_id)["status"] == "ignored"  # signed with the relay's secret

    assert sync(RULES) == [
        f"= unchanged webhook mlflow-devops-relay {hook.webhook_id}  "
        "events=model_version.created,model_version_alias.created",
        "no change",
    ]
    assert relay_hooks()[0].last_updated_timestamp == hook.last_updated_timestamp

    out = sync(RULES + TAG_RULE)
    assert out[0] == (
        f"~ updated webhook mlflow-devops-relay {hook.webhook_id}  events: model_version.created,"
        "model_version_alias.created -> model_version.created,model_version_tag.set,"
        "model_version_alias.created"
    )
    (hook,) = relay_hooks()
    assert "model_version_tag.set" in [str(e) for e in hook.events]
    assert tested_into_the_relay(hook.webhook_id)["status"] == "ignored"  # the update kept the secret right

    client.update_webhook(hook.webhook_id, status="DISABLED")
    assert (
        sync(RULES + TAG_RULE)[0]
        == f"~ updated webhook mlflow-devops-relay {hook.webhook_id}  status: DISABLED -> ACTIVE"
    )

    stray = client.create_webhook(
        name="stray", url=relay.webhook_url, events=["registered_model.created"], secret="old"
    )
    out = sync(RULES + TAG_RULE)
    assert out[1:] == [
        f"- not needed (kept; --prune deletes it) webhook stray {stray.webhook_id}  events=registered_model.created",
        "no change",
    ]
    assert sync(RULES + TAG_RULE, "--dry-run", "--prune")[1].startswith("- would delete webhook stray")
    assert len(relay_hooks()) == 2
    assert sync(RULES + TAG_RULE, "--prune")[1].startswith(f"- deleted webhook stray {stray.webhook_id}")
    assert [w.webhook_id for w in relay_hooks()] == [hook.webhook_id]
    assert client.get_webhook(others.webhook_id).url == f"{relay.base_url}/elsewhere"  # not this relay's

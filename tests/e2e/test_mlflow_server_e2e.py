"""A real ``mlflow server`` delivering signed webhooks to the relay, which starts Azure DevOps runs.

Everything runs on loopback: the installed MLflow (sqlite registry) in its own process group, the
relay's registered Azure Functions served in this process, and the TLS Azure DevOps stand-in.
MLflow delivers asynchronously (a thread pool, after the registry call has returned), so every
expectation is a bounded wait, followed by a short settle period to catch late duplicates.

Both webhooks of the main scenario (right and wrong secret) are created before its first event:
MLflow caches the webhook list per event type for 60 s (see ``tests/e2e/conftest.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from standins.devops import RELAY_DEFAULT_PARAMETERS, DevOpsStandIn, StartedRun

if TYPE_CHECKING:  # the fixtures' types; pytest has already imported conftest itself
    from mlflow import MlflowClient

    from tests.e2e.conftest import RelayAnswer, RelayUnderTest

pytestmark = pytest.mark.e2e

DELIVERY_TIMEOUT_SECONDS = 20.0  # one MLflow delivery, relay decision and DevOps call
SETTLE_SECONDS = 2.0  # after the last expected answer: nothing more may arrive

SUBSCRIBED_EVENTS = [
    "registered_model.created",
    "model_version.created",
    "model_version_alias.created",
    "model_version_tag.set",
]

TAG_PIPELINE_PARAMETERS = frozenset({"model_name", "model_version", "deploy_flag", "delivery_id"})

RULES = """\
rules:
  - name: version-validate
    pipeline_id: 7
    when:
      event: model_version.created
      model: "e2e-relay-*"
  - name: champion-deploy
    pipeline_id: 13
    when:
      event: model_version_alias.created
      alias: champion
  - name: deploy-tag
    pipeline_id: 21
    parameters:
      model_name: "{model_name}"
      model_version: "{version}"
      deploy_flag: "{tag_key}={tag_value}"
      delivery_id: "{delivery_id}"
    when:
      event: model_version_tag.set
      tag: {key: deploy, value: "true"}
"""


def default_parameters(model: str, version: str, event: str, delivery_id: str, alias: str = "") -> dict[str, str]:
    """What a rule without ``parameters`` sends (``webhook.routing.DEFAULT_PARAMETERS``)."""
    return {
        "model_name": model,
        "model_version": version,
        "event": event,
        "from_stage": "",
        "to_stage": "",
        "alias": alias,
        "delivery_id": delivery_id,
    }


@dataclass
class Scenario:
    """Drives one registry change at a time and checks what reached the relay and DevOps."""

    relay: RelayUnderTest
    standin: DevOpsStandIn
    model: str
    wait_for: Callable[..., Any]
    triggered: list[tuple[RelayAnswer, list[StartedRun]]] = field(default_factory=list)

    def _describe(self, what: str) -> Callable[[], str]:
        return lambda: (
            f"{what}\nrelay answers so far:\n{self.relay.answers.describe()}\npipeline runs so far: {self.standin.runs}"
        )

    def next_answer(self, hook: str, seen: int, event: str) -> RelayAnswer:
        """Wait for the relay's answer to the next delivery through ``hook``; exactly one."""
        answers: list[RelayAnswer] = self.wait_for(
            lambda: self.relay.answers.where(hook=hook)[seen:],
            timeout=DELIVERY_TIMEOUT_SECONDS,
            describe=self._describe(f"no {event} delivery for {self.model} through the {hook!r} webhook"),
        )
        assert len(answers) == 1, f"expected one {event} delivery through {hook!r}, got:\n" + "\n".join(
            map(str, answers)
        )
        answer = answers[0]
        assert (answer.event, answer.model_name) == (event, self.model), f"unexpected delivery: {answer}"
        return answer

    def change(self, action: Callable[[], object], *, event: str, pipelines: list[int]) -> RelayAnswer:
        """Run a registry ``action``; expect one signed and one wrong-secret delivery of ``event``.

        Returns the signed delivery's answer; checks it started exactly ``pipelines``.
        """
        seen_current = len(self.relay.answers.where(hook="current"))
        seen_wrong = len(self.relay.answers.where(hook="wrong-secret"))
        runs_before = len(self.standin.runs)
        action()
        answer = self.next_answer("current", seen_current, event)
        rejected = self.next_answer("wrong-secret", seen_wrong, event)

        assert rejected.status == 401, f"a wrong secret must get 401: {rejected}"
        assert rejected.body["error"] == "AuthenticationFailed", rejected
        assert answer.delivery_id and answer.body.get("delivery_id") == answer.delivery_id, answer
        assert rejected.delivery_id != answer.delivery_id  # two webhooks: two deliveries

        started = self.standin.runs[runs_before:]  # the relay answers after DevOps answered
        assert [r.pipeline_id for r in started] == pipelines, (
            f"{event}: expected runs of pipelines {pipelines}, got {started}; answer {answer}"
        )
        expected_status = "triggered" if pipelines else "ignored"
        assert (answer.status, answer.body["status"]) == (200, expected_status), answer
        if pipelines:
            run_ids = sorted(r["run_id"] for r in answer.body["runs"])
            assert run_ids == sorted(r.run_id for r in started), answer
        self.triggered.append((answer, started))
        return answer


def test_registry_changes_start_the_routed_pipelines_exactly_once(
    mlflow_client: MlflowClient,
    devops_standin: DevOpsStandIn,
    start_relay: Callable[..., RelayUnderTest],
    wait_for: Callable[..., Any],
) -> None:
    """Model → v1 → alias → tag → v2 → other tag → alias moved: each routed event runs once."""
    client = mlflow_client
    secret = f"whsec-e2e-{uuid.uuid4().hex}"
    devops_standin.declared_parameters[21] = TAG_PIPELINE_PARAMETERS
    relay = start_relay(RULES, webhook_secret=secret)
    # Both webhooks exist before the first event fires (MLflow's per-event webhook cache).
    client.create_webhook(
        name="relay", url=f"{relay.webhook_url}?hook=current", events=SUBSCRIBED_EVENTS, secret=secret
    )
    client.create_webhook(
        name="relay-wrong-secret",
        url=f"{relay.webhook_url}?hook=wrong-secret",
        events=SUBSCRIBED_EVENTS,
        secret=f"not-{secret}",
    )

    model = f"e2e-relay-{uuid.uuid4().hex[:8]}"
    scenario = Scenario(relay, devops_standin, model, wait_for)
    run = client.create_run(client.create_experiment(f"{model}-training"))

    def register_version() -> None:
        client.create_model_version(model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

    created = scenario.change(
        lambda: client.create_registered_model(model), event="registered_model.created", pipelines=[]
    )
    v1 = scenario.change(register_version, event="model_version.created", pipelines=[7])
    alias_v1 = scenario.change(
        lambda: client.set_registered_model_alias(model, "champion", "1"),
        event="model_version_alias.created",
        pipelines=[13],
    )
    tag_v1 = scenario.change(
        lambda: client.set_model_version_tag(model, "1", "deploy", "true"),
        event="model_version_tag.set",
        pipelines=[21],
    )
    v2 = scenario.change(register_version, event="model_version.created", pipelines=[7])
    scenario.change(
        lambda: client.set_model_version_tag(model, "2", "deploy", "false"), event="model_version_tag.set", pipelines=[]
    )
    # Moving an alias is one model_version_alias.created for the new version (no "deleted" for v1).
    alias_v2 = scenario.change(
        lambda: client.set_registered_model_alias(model, "champion", "2"),
        event="model_version_alias.created",
        pipelines=[13],
    )

    assert "no rule matches registered_model.created" in created.body["detail"]
    expected = [
        (v1, default_parameters(model, "1", "model_version.created", v1.delivery_id or "")),
        (
            alias_v1,
            default_parameters(model, "1", "model_version_alias.created", alias_v1.delivery_id or "", alias="champion"),
        ),
        (
            tag_v1,
            {
                "model_name": model,
                "model_version": "1",
                "deploy_flag": "deploy=true",
                "delivery_id": tag_v1.delivery_id or "",
            },
        ),
        (v2, default_parameters(model, "2", "model_version.created", v2.delivery_id or "")),
        (
            alias_v2,
            default_parameters(model, "2", "model_version_alias.created", alias_v2.delivery_id or "", alias="champion"),
        ),
    ]
    started = {answer.delivery_id: runs for answer, runs in scenario.triggered if runs}
    for answer, parameters in expected:
        (only_run,) = started[answer.delivery_id]
        assert only_run.template_parameters == parameters, f"{answer.event}: {only_run}"
        assert (only_run.org, only_run.project) == ("contoso", "MLOps")
    assert set(RELAY_DEFAULT_PARAMETERS) == set(expected[0][1])  # the stand-in's default declaration

    # Let any late retry or duplicate arrive, then check nothing else happened.
    answers_count, runs_count = len(relay.answers.all()), len(devops_standin.runs)
    time.sleep(SETTLE_SECONDS)
    assert len(relay.answers.all()) == answers_count, "late deliveries:\n" + relay.answers.describe()
    assert len(devops_standin.runs) == runs_count == 5, devops_standin.runs
    assert len(devops_standin.api_requests) == 5, "the relay called Azure DevOps more than once per run"
    delivery_ids = [r.template_parameters["delivery_id"] for r in devops_standin.runs]
    assert len(set(delivery_ids)) == 5


def test_mlflow_test_webhook_is_acknowledged_and_starts_nothing(
    mlflow_client: MlflowClient,
    devops_standin: DevOpsStandIn,
    start_relay: Callable[..., RelayUnderTest],
) -> None:
    """``test_webhook`` sends ``example_model``: 200 "ignored" with the secret, 401 without."""
    client = mlflow_client
    secret = f"whsec-e2e-{uuid.uuid4().hex}"
    # A catch-all alias rule: a test payload must still start nothing (no rule names example_model).
    catch_all = "  - name: any-alias\n    pipeline_id: 30\n    when: {event: model_version_alias.created}\n"
    relay = start_relay(RULES + catch_all, webhook_secret=secret)
    current = client.create_webhook(
        name="relay-test", url=f"{relay.webhook_url}?hook=current", events=SUBSCRIBED_EVENTS, secret=secret
    )
    wrong = client.create_webhook(
        name="relay-test-wrong",
        url=f"{relay.webhook_url}?hook=wrong-secret",
        events=SUBSCRIBED_EVENTS,
        secret=f"not-{secret}",
    )

    for event in SUBSCRIBED_EVENTS:
        result = client.test_webhook(current.webhook_id, event=event)
        assert (result.success, result.response_status) == (True, 200), (event, result)
        body = json.loads(result.response_body or "{}")
        assert body["status"] == "ignored", (event, body)
        assert body["model"] == "example_model" and body["event"] == event, body
        assert "test delivery for 'example_model'" in body["detail"], body

    result = client.test_webhook(wrong.webhook_id)
    assert (result.success, result.response_status) == (False, 401), result
    assert json.loads(result.response_body or "{}")["error"] == "AuthenticationFailed", result

    # test_webhook is synchronous: every answer is in by now.
    assert [a.status for a in relay.answers.where(hook="current")] == [200] * len(SUBSCRIBED_EVENTS)
    assert [a.status for a in relay.answers.where(hook="wrong-secret")] == [401]
    assert devops_standin.runs == [] and devops_standin.api_requests == []

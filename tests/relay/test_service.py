"""``RelayService`` with fakes: the order of checks and how per-rule outcomes fold into one answer."""

from __future__ import annotations

import logging

import pytest

from relay.ports import PipelineRun
from relay.ledger import InMemoryLedger
from relay.ports import DevOpsUnavailable, PipelineRejected, StorageUnavailable
from relay.secrets import RelaySecrets
from relay.service import RelayService
from webhook.delivery import MAX_BODY_BYTES
from webhook.errors import ConfigurationError
from webhook.routing import parse_rules

RULES = parse_rules("""
rules:
  - {name: deploy, pipeline_id: 13, when: {to_stage: Production}}
  - {name: notify, pipeline_id: 14, when: {to_stage: Production}}
""")


class FakeStarter:
    """Starts runs in memory; ``failures`` maps a rule to the exception it raises."""

    def __init__(self, failures=None):
        self.started, self.failures = [], dict(failures or {})

    def start(self, request):
        error = self.failures.get(request.rule)
        if error is not None:
            raise error
        self.started.append(request)
        return PipelineRun(request.rule, request.pipeline_id, 100 + len(self.started), None)


class FakeQueue:
    def __init__(self, error=None):
        self.queued, self.error = [], error

    def enqueue(self, request, *, attempt, delay):
        if self.error:
            raise self.error
        self.queued.append((request.rule, attempt, delay))


class Env(dict):
    description = "the test environment"


@pytest.fixture
def env(deliveries):
    return Env(WEBHOOK_SECRET=deliveries.secret, DEVOPS_PAT=deliveries.pat)


@pytest.fixture
def make_service(env):
    def make(*, starter=None, queue=None, ledger=None, rules=RULES, clock=None):
        import time

        secrets = RelaySecrets(env, webhook_name="WEBHOOK_SECRET", previous_name=None, pat_name="DEVOPS_PAT",
                               ttl=300)  # fmt: skip
        return RelayService(secrets=secrets, rules=lambda: rules, starter=starter or FakeStarter(),
                            ledger=ledger or InMemoryLedger(), default_project="MLOps", max_age=600,
                            retry_queue=queue, clock=clock or time.time)  # fmt: skip

    return make


def post(service, deliveries, body=None, headers=None):
    body = deliveries.databricks_body() if body is None else body
    return service.handle(method="POST", headers=headers or deliveries.databricks_headers(body), body=body)


class TestRelayService:
    def test_fan_out_starts_every_matching_rule(self, make_service, deliveries):
        starter = FakeStarter()
        answer = post(make_service(starter=starter), deliveries)
        assert answer.status == 200 and answer.body["status"] == "triggered"
        assert sorted(r["rule"] for r in answer.body["runs"]) == ["deploy", "notify"]
        assert len(starter.started) == 2

    def test_one_rejected_rule_answers_502_with_the_runs_that_started(self, make_service, deliveries):
        starter = FakeStarter({"notify": PipelineRejected("Unexpected parameter 'x'")})
        answer = post(make_service(starter=starter), deliveries)
        assert answer.status == 502
        assert "Unexpected parameter 'x'" in answer.body["detail"]
        assert [r["rule"] for r in answer.body["runs"]] == ["deploy"]

    def test_rejected_rule_may_be_retried_by_the_sender(self, make_service, deliveries):
        starter = FakeStarter({"notify": PipelineRejected("no")})
        service = make_service(starter=starter)
        body = deliveries.databricks_body()
        post(service, deliveries, body)
        del starter.failures["notify"]
        answer = post(service, deliveries, body)
        assert answer.status == 200 and answer.body["status"] == "triggered"
        assert [r.rule for r in starter.started] == ["deploy", "notify"]

    def test_outage_with_a_retry_queue_answers_202_queued(self, make_service, deliveries):
        queue = FakeQueue()
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503", retry_after=45)})
        answer = post(make_service(starter=starter, queue=queue), deliveries)
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert answer.body["pending"] == ["deploy"]
        assert queue.queued == [("deploy", 1, 45.0)]

    def test_queued_delivery_repeated_is_not_started_again(self, make_service, deliveries):
        queue, ledger = FakeQueue(), InMemoryLedger()
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503")})
        service = make_service(starter=starter, queue=queue, ledger=ledger)
        body = deliveries.databricks_body()
        post(service, deliveries, body)
        del starter.failures["deploy"]
        answer = post(service, deliveries, body)
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert [r.rule for r in starter.started] == ["notify"]

    def test_outage_with_the_queue_down_answers_503(self, make_service, deliveries):
        queue = FakeQueue(error=StorageUnavailable("queue down"))
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503", retry_after=40)})
        answer = post(make_service(starter=starter, queue=queue), deliveries)
        assert answer.status == 503 and answer.headers["Retry-After"] == "40"

    def test_claim_held_by_another_attempt_answers_202_in_progress(self, make_service, deliveries):
        ledger = InMemoryLedger()
        body = deliveries.databricks_body()
        event_id = make_service(rules=parse_rules("rules: []"), ledger=ledger)  # parse only, to learn the id
        answer = post(event_id, deliveries, body)
        ledger.claim(f"{answer.body['delivery_id']}:deploy")
        ledger.claim(f"{answer.body['delivery_id']}:notify")
        answer = post(make_service(ledger=ledger), deliveries, body)
        assert answer.status == 202 and answer.body["status"] == "in_progress"

    def test_unexpected_exception_answers_500_without_traceback(self, make_service, deliveries, caplog):
        answer = post(make_service(starter=FakeStarter({"deploy": ZeroDivisionError("division by zero")})), deliveries)
        assert answer.status == 500
        assert answer.body == {
            "status": "error",
            "error": "InternalError",
            "detail": "internal error; see the relay's logs",
        }
        assert "Traceback" not in answer.body_bytes().decode()
        assert any(r.exc_info for r in caplog.records)

    def test_configuration_error_in_a_run_answers_500_and_frees_the_claim(self, make_service, deliveries):
        starter = FakeStarter({"deploy": ConfigurationError("Azure DevOps PAT secret 'DEVOPS_PAT' not found")})
        service = make_service(starter=starter)
        body = deliveries.databricks_body()
        answer = post(service, deliveries, body)
        assert answer.status == 500 and "DEVOPS_PAT" in answer.body["detail"]
        del starter.failures["deploy"]
        again = post(service, deliveries, body)
        assert again.status == 200
        assert "deploy" in [r.rule for r in starter.started]

    def test_body_limit_is_64_kib(self, make_service, deliveries):
        body = b" " * (MAX_BODY_BYTES + 1)
        answer = post(make_service(), deliveries, body)
        assert answer.status == 413
        assert post(make_service(), deliveries, b" " * MAX_BODY_BYTES).status != 413

    def test_stale_event_does_not_refresh_secrets(self, make_service, deliveries, env):
        service = make_service()
        body = deliveries.mlflow_body()
        answer = post(service, deliveries, body, deliveries.mlflow_headers(body, timestamp=1_000_000_000))
        assert answer.status == 401 and "stale" in answer.body["detail"]
        env["WEBHOOK_SECRET"] = "rotated"
        fresh = post(service, deliveries, body, deliveries.mlflow_headers(body, "rotated"))
        assert fresh.status == 200  # the refresh was not spent on the stale delivery

    def test_decisions_are_logged_with_correlation_ids(self, make_service, deliveries, caplog):
        caplog.set_level(logging.INFO, logger="relay")
        answer = post(make_service(), deliveries)
        messages = [r.getMessage() for r in caplog.records if r.name == "relay"]
        assert any("decision=triggered" in m and f"delivery_id={answer.body['delivery_id']}" in m for m in messages)

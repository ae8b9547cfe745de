"""``RelayService`` with fakes: the order of checks, exactly-once per rule, and how per-rule
outcomes fold into one answer."""

from __future__ import annotations

import logging
import time

import pytest

from relay.ledger import InMemoryLedger, LedgerTiming
from relay.ports import (
    DevOpsUnavailable,
    EntryState,
    PipelineRejected,
    PipelineRun,
    RetryTicket,
    StorageUnavailable,
)
from relay.secrets import RelaySecrets
from relay.service import RelayService, answer_request
from tests.builders import run_request
from webhook.delivery import MAX_BODY_BYTES
from webhook.errors import ConfigurationError
from webhook.rules import parse_rules

RULES = parse_rules("""
rules:
  - {name: deploy, pipeline_id: 13, when: {to_stage: Production}}
  - {name: notify, pipeline_id: 14, when: {to_stage: Production}}
""")


class FakeStarter:
    """Starts runs in memory; ``failures`` maps a rule to the exception it raises."""

    def __init__(self, failures=None, *, already_started=None):
        self.started, self.failures = [], dict(failures or {})
        self.already_started = dict(already_started or {})  # rule -> run an earlier attempt made
        self.lookups = []

    def start(self, request, *, deadline):
        error = self.failures.get(request.rule)
        if error is not None:
            raise error
        self.started.append(request)
        return PipelineRun(request.rule, request.pipeline_id, 100 + len(self.started), None)

    def find_started(self, request, *, since, deadline):
        self.lookups.append((request.rule, since))
        return self.already_started.get(request.rule)


class FakeQueue:
    def __init__(self, error=None):
        self.tickets, self.error = [], error

    def enqueue(self, ticket: RetryTicket, *, delay):
        if self.error:
            raise self.error
        self.tickets.append((ticket, delay))


class Env(dict):
    description = "the test environment"


@pytest.fixture
def env(deliveries):
    return Env(WEBHOOK_SECRET=deliveries.secret, DEVOPS_PAT=deliveries.pat)


@pytest.fixture
def make_service(env):
    def make(*, starter=None, queue=None, ledger=None, rules=RULES, clock=None):
        secrets = RelaySecrets(env, webhook_name="WEBHOOK_SECRET", previous_name=None, pat_name="DEVOPS_PAT", ttl=300)
        return RelayService(
            secrets=secrets,
            rules=lambda: rules,
            starter=starter or FakeStarter(),
            ledger=ledger or InMemoryLedger(LedgerTiming(lease=50)),
            default_project="MLOps",
            max_age=600,
            deadline=20,
            retry_queue=(lambda: queue) if queue else None,
            clock=clock or time.time,
        )

    return make


def post(service, deliveries, body=None, headers=None):
    body = deliveries.databricks_body() if body is None else body
    return service.handle(method="POST", headers=headers or deliveries.databricks_headers(body), body=body)


class TestOutcomes:
    """One answer per delivery, the worst rule's outcome deciding it."""

    def test_fan_out_starts_every_matching_rule(self, make_service, deliveries):
        starter = FakeStarter()
        answer = post(make_service(starter=starter), deliveries)
        assert answer.status == 200 and answer.body["status"] == "triggered"
        assert sorted(r["rule"] for r in answer.body["runs"]) == ["deploy", "notify"]
        assert len(starter.started) == 2 and starter.lookups == []  # fresh claims look for nothing

    def test_one_refused_rule_answers_424_with_the_runs_that_started(self, make_service, deliveries):
        starter = FakeStarter({"notify": PipelineRejected("Unexpected parameter 'x'")})
        answer = post(make_service(starter=starter), deliveries)
        assert answer.status == 424 and answer.body["status"] == "refused"
        assert "Unexpected parameter 'x'" in answer.body["detail"]
        assert [r["rule"] for r in answer.body["runs"]] == ["deploy"]

    def test_a_refusal_is_remembered_and_not_posted_again(self, make_service, deliveries):
        starter = FakeStarter({"notify": PipelineRejected("Unexpected parameter 'x'")})
        ledger = InMemoryLedger(LedgerTiming(lease=50))
        service = make_service(starter=starter, ledger=ledger)
        body = deliveries.databricks_body()
        first = post(service, deliveries, body)
        del starter.failures["notify"]
        again = post(service, deliveries, body)
        assert again.status == 424 and "Unexpected parameter 'x'" in again.body["detail"]
        assert [r.rule for r in starter.started] == ["deploy"]
        ledger.reopen(f"{first.body['delivery_id']}:notify", by="operator")  # the pipeline was fixed
        replayed = post(service, deliveries, body)
        assert replayed.status == 200 and [r.rule for r in starter.started] == ["deploy", "notify"]

    def test_outage_with_a_retry_queue_answers_202_queued_with_a_ticket(self, make_service, deliveries):
        queue = FakeQueue()
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503", retry_after=45)})
        answer = post(make_service(starter=starter, queue=queue), deliveries)
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert answer.body["pending"] == ["deploy"]
        ((ticket, delay),) = queue.tickets
        assert ticket.key == f"{answer.body['delivery_id']}:deploy" and ticket.attempt == 1
        assert delay == 60.0  # the retry base delay: the ledger says "queued" before the ticket is visible

    def test_queued_delivery_repeated_is_not_started_again(self, make_service, deliveries):
        queue = FakeQueue()
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503")})
        service = make_service(starter=starter, queue=queue)
        body = deliveries.databricks_body()
        post(service, deliveries, body)
        del starter.failures["deploy"]
        answer = post(service, deliveries, body)
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert [r.rule for r in starter.started] == ["notify"]

    def test_ledger_write_failing_after_the_ticket_was_sent_still_answers_queued(self, make_service, deliveries):
        class FailingRecordLedger(InMemoryLedger):
            def record(self, claim, state, **kwargs):
                if state is EntryState.QUEUED:
                    raise StorageUnavailable("table write failed")
                return super().record(claim, state, **kwargs)

        queue = FakeQueue()
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503")})
        answer = post(
            make_service(starter=starter, queue=queue, ledger=FailingRecordLedger(LedgerTiming(50))), deliveries
        )
        assert answer.status == 202 and len(queue.tickets) == 1  # the ticket finds the claim after its lease

    def test_outage_with_the_queue_down_answers_503_and_releases_the_claim(self, make_service, deliveries):
        queue = FakeQueue(error=StorageUnavailable("queue down"))
        starter = FakeStarter({"deploy": DevOpsUnavailable("HTTP 503", retry_after=40)})
        service = make_service(starter=starter, queue=queue)
        body = deliveries.databricks_body()
        answer = post(service, deliveries, body)
        assert answer.status == 503 and answer.headers["Retry-After"] == "40"
        assert answer.body["status"] == "unavailable"
        del starter.failures["deploy"]
        again = post(service, deliveries, body)
        assert again.status == 200 and "deploy" in [r.rule for r in starter.started]
        assert [rule for rule, _ in starter.lookups] == ["deploy"]  # a released claim looks first

    def test_one_rule_whose_claim_fails_answers_503_with_the_run_the_other_started(self, make_service, deliveries):
        class OneRuleDown(InMemoryLedger):
            def claim(self, request):
                if request.rule == "notify":
                    raise StorageUnavailable("table unreachable", retry_after=7)
                return super().claim(request)

        starter = FakeStarter()
        service = make_service(starter=starter, ledger=OneRuleDown(LedgerTiming(50)))
        body = deliveries.databricks_body()
        answer = post(service, deliveries, body)
        assert (answer.status, answer.body["status"], answer.headers["Retry-After"]) == (503, "unavailable", "7")
        assert [r["rule"] for r in answer.body["runs"]] == ["deploy"] and answer.body["pending"] == ["notify"]
        assert [r.rule for r in starter.started] == ["deploy"]

    def test_every_rule_failing_alike_answers_that_error(self, make_service, deliveries):
        class Down(InMemoryLedger):
            def claim(self, request):
                raise StorageUnavailable("table unreachable", retry_after=7)

        answer = post(make_service(ledger=Down(LedgerTiming(50))), deliveries)
        assert (answer.status, answer.body["error"], answer.headers["Retry-After"]) == (503, "StorageUnavailable", "7")

    def test_what_the_state_gate_decided_is_kept_when_every_other_rule_fails(self, make_service):
        from relay.answers import RunOutcome

        class Down(InMemoryLedger):
            def claim(self, request):
                raise StorageUnavailable("table unreachable", retry_after=7)

        class Gate:
            def screen(self, event, requests):
                return [RunOutcome(requests[0], "duplicate", run=PipelineRun("deploy", 13, 5, None))], requests[1:]

        service = make_service(ledger=Down(LedgerTiming(50)))
        service.state_gate = Gate()
        outcomes = service.dispatch([_request("d-1", "deploy"), _request("d-1", "notify")], event=object())
        assert [(o.request.rule, o.status) for o in outcomes] == [("deploy", "duplicate"), ("notify", "unavailable")]

    def test_claim_held_by_another_attempt_answers_503_in_progress(self, make_service, deliveries):
        ledger = InMemoryLedger(LedgerTiming(lease=50))
        body = deliveries.databricks_body()
        learn = post(make_service(rules=parse_rules("rules: []"), ledger=ledger), deliveries, body)
        for rule in ("deploy", "notify"):
            ledger.claim(_request(learn.body["delivery_id"], rule))
        answer = post(make_service(ledger=ledger), deliveries, body)
        assert answer.status == 503 and answer.body["status"] == "in_progress"
        assert 1 <= int(answer.headers["Retry-After"]) <= 51

    def test_takeover_finds_the_run_an_earlier_attempt_started(self, make_service, deliveries, clock):
        ledger = InMemoryLedger(LedgerTiming(lease=50), clock=clock)
        body = deliveries.databricks_body()
        learn = post(make_service(rules=parse_rules("rules: []"), ledger=ledger), deliveries, body)
        for rule in ("deploy", "notify"):
            ledger.claim(_request(learn.body["delivery_id"], rule))  # holders that died
        clock.advance(51)
        earlier = PipelineRun("deploy", 13, 77, "https://web/77")
        starter = FakeStarter(already_started={"deploy": earlier})
        answer = post(make_service(ledger=ledger, starter=starter), deliveries, body)
        assert answer.status == 200 and {r["run_id"] for r in answer.body["runs"]} == {77, 101}
        assert [r.rule for r in starter.started] == ["notify"]


def _request(delivery_id, rule):
    return run_request(delivery_id, rule, model="m", version="1")


class TestErrors:
    """Errors become answers in one place, without a traceback or configuration detail."""

    def test_unexpected_exception_answers_500_with_an_error_id(self, make_service, deliveries, caplog):
        answer = post(make_service(starter=FakeStarter({"deploy": ZeroDivisionError("division by zero")})), deliveries)
        assert answer.status == 500 and answer.body["error"] == "InternalError"
        assert "Traceback" not in answer.body_bytes().decode()
        logged = [r for r in caplog.records if r.exc_info]
        assert logged and answer.body["error_id"] in logged[0].getMessage()

    def test_configuration_error_answers_a_generic_500_and_frees_the_claim(self, make_service, deliveries, caplog):
        starter = FakeStarter({"deploy": ConfigurationError("Azure DevOps PAT secret 'DEVOPS_PAT' not found")})
        service = make_service(starter=starter)
        body = deliveries.databricks_body()
        answer = post(service, deliveries, body)
        assert answer.status == 500 and "DEVOPS_PAT" not in answer.body_bytes().decode()
        line = next(r.getMessage() for r in caplog.records if "decision=misconfigured" in r.getMessage())
        assert answer.body["error_id"] in line and "DEVOPS_PAT" in line
        del starter.failures["deploy"]
        again = post(service, deliveries, body)
        assert again.status == 200 and "deploy" in [r.rule for r in starter.started]

    def test_unsigned_request_is_answered_401_without_building_the_relay(self, deliveries):
        def no_relay():
            raise AssertionError("the relay must not be built for an unsigned request")

        answer = answer_request(method="POST", headers={}, body=b"{}", verifier=no_relay, service=no_relay)
        assert answer.status == 401 and answer.body["status"] == "rejected"

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


class TestLogs:
    """Decision lines carry correlation ids; unauthenticated values are quoted."""

    def test_decisions_are_logged_with_correlation_ids(self, make_service, deliveries, caplog):
        caplog.set_level(logging.INFO, logger="relay")
        answer = post(make_service(), deliveries)
        messages = [r.getMessage() for r in caplog.records if r.name == "relay"]
        assert any("decision=triggered" in m and f"delivery_id={answer.body['delivery_id']}" in m for m in messages)

    def test_crafted_delivery_id_header_is_quoted_and_cannot_forge_fields(self, make_service, deliveries, caplog):
        caplog.set_level(logging.INFO, logger="relay")
        body = deliveries.mlflow_body()
        headers = {**deliveries.mlflow_headers(body), "X-MLflow-Signature": "v1,forged"}
        headers["X-MLflow-Delivery-Id"] = "x run_id=666\nrelay decision=triggered"
        post(make_service(), deliveries, body, headers)
        lines = [r.getMessage() for r in caplog.records if r.name == "relay"]
        assert lines and all("\n" not in line for line in lines)
        received = next(line for line in lines if "decision=received" in line)
        assert "delivery_id='x run_id=666\\nrelay decision=triggered'" in received

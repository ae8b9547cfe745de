"""``RetryWorker`` with the in-memory ledger and fakes: tickets are references, never requests."""

from __future__ import annotations

import json
import logging

import pytest

from relay.ledger import InMemoryLedger, LedgerTiming
from relay.ports import DevOpsUnavailable, EntryState, PipelineRejected, PipelineRun, RetryTicket, StorageUnavailable
from relay.retry_worker import RetryWorker, queue_backoff
from webhook.routing import PipelineRunRequest

REQUEST = PipelineRunRequest(
    rule="deploy",
    project="MLOps",
    pipeline_id=13,
    branch=None,
    template_parameters={"delivery_id": "d-1"},
    delivery_id="d-1",
    model_name="fraud",
    version="7",
)


class Starter:
    def __init__(self, error=None, found=None):
        self.error, self.found, self.started, self.lookups = error, found, [], 0

    def start(self, request, *, deadline):
        if self.error:
            raise self.error
        self.started.append(request)
        return PipelineRun(request.rule, request.pipeline_id, 500 + len(self.started), None)

    def find_started(self, request, *, since, deadline):
        self.lookups += 1
        return self.found


class Queues:
    def __init__(self, error=None):
        self.sent, self.poisoned, self.error = [], [], error

    def enqueue(self, ticket, *, delay):
        if self.error:
            raise self.error
        self.sent.append((ticket, delay))

    def poison(self, ticket, *, reason, raw=""):
        self.poisoned.append((ticket, reason, raw))


@pytest.fixture
def ledger(clock):
    return InMemoryLedger(LedgerTiming(lease=50), clock=clock)


def queued_entry(ledger):
    """What the HTTP path leaves after an outage: a queued entry holding the verified request."""
    claim = ledger.claim(REQUEST).claim
    ledger.record(claim, EntryState.QUEUED, attempts=0)
    return RetryTicket.for_request(REQUEST, attempt=1, last_error="HTTP 503").to_json()


def worker(ledger, starter, queues, clock, **kwargs):
    return RetryWorker(
        starter=starter, ledger=ledger, queue=queues, poison=queues, max_attempts=3, deadline=5, clock=clock, **kwargs
    )


class TestRetryWorker:
    def test_ticket_starts_the_verified_request_from_the_ledger_after_looking(self, ledger, clock):
        starter, queues = Starter(), Queues()
        assert worker(ledger, starter, queues, clock).process(queued_entry(ledger)) == "triggered"
        assert starter.started == [REQUEST] and starter.lookups == 1
        assert ledger.get(REQUEST.idempotency_key).state is EntryState.STARTED

    def test_a_run_an_earlier_attempt_started_is_found_not_started_again(self, ledger, clock):
        starter = Starter(found=PipelineRun("deploy", 13, 77, None))
        assert worker(ledger, starter, Queues(), clock).process(queued_entry(ledger)) == "duplicate"
        assert starter.started == [] and ledger.get(REQUEST.idempotency_key).run.run_id == 77

    def test_repeated_ticket_for_a_started_run_is_a_duplicate(self, ledger, clock):
        raw, starter = queued_entry(ledger), Starter()
        w = worker(ledger, starter, Queues(), clock)
        w.process(raw)
        assert w.process(raw) == "duplicate" and len(starter.started) == 1  # the host ran it twice

    def test_live_claim_defers_the_ticket_until_the_lease_ends(self, ledger, clock):
        raw = queued_entry(ledger)
        assert ledger.claim_for_retry(REQUEST.idempotency_key).won  # another worker holds it now
        queues, starter = Queues(), Starter()
        assert worker(ledger, starter, queues, clock).process(raw) == "deferred"
        ((ticket, delay),) = queues.sent
        assert ticket.key == REQUEST.idempotency_key and 50 <= delay <= 52 and not starter.started

    def test_outage_requeues_with_backoff_and_counts_attempts_in_the_ledger(self, ledger, clock):
        queues = Queues()
        w = worker(ledger, Starter(error=DevOpsUnavailable("HTTP 503", retry_after=1)), queues, clock, base_delay=5)
        assert w.process(queued_entry(ledger)) == "requeued"
        ((ticket, delay),) = queues.sent
        assert ticket.attempt == 2 and 3.75 <= delay <= 6.25
        entry = ledger.get(REQUEST.idempotency_key)
        assert entry.state is EntryState.QUEUED and entry.attempts == 1

    def test_last_attempt_is_poisoned_with_an_error_line_naming_the_version(self, ledger, clock, caplog):
        queues = Queues()
        w = worker(ledger, Starter(error=DevOpsUnavailable("HTTP 503")), queues, clock)
        raw = queued_entry(ledger)
        for _ in range(3):
            raw = queues.sent[-1][0].to_json() if queues.sent else raw
            w.process(raw)
        assert len(queues.poisoned) == 1 and ledger.get(REQUEST.idempotency_key).state is EntryState.POISONED
        ticket, _reason, _ = queues.poisoned[0]
        assert (ticket.delivery_id, ticket.model, ticket.version, ticket.rule) == ("d-1", "fraud", "7", "deploy")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("model fraud version 7 was NOT deployed by rule deploy" in e for e in errors)

    def test_refusal_is_recorded_and_poisoned_for_an_operator(self, ledger, clock):
        queues = Queues()
        w = worker(ledger, Starter(error=PipelineRejected("Unexpected parameter 'x'")), queues, clock)
        assert w.process(queued_entry(ledger)) == "poisoned"
        assert ledger.get(REQUEST.idempotency_key).state is EntryState.REFUSED
        assert "Unexpected parameter" in queues.poisoned[0][1]

    def test_ticket_for_an_unknown_delivery_starts_nothing(self, ledger, clock, caplog):
        forged = RetryTicket(
            key="forged:deploy", delivery_id="forged", model="any", version="1", rule="deploy", attempt=1
        ).to_json()
        starter, queues = Starter(), Queues()
        assert worker(ledger, starter, queues, clock).process(forged) == "poisoned"
        assert not starter.started and len(queues.poisoned) == 1

    def test_old_style_message_carrying_a_request_is_not_trusted(self, ledger, clock):
        message = json.dumps({"version": 1, "attempt": 1, "request": REQUEST.model_dump()})
        starter, queues = Starter(), Queues()
        assert worker(ledger, starter, queues, clock).process(message) == "poisoned"
        assert not starter.started and queues.poisoned[0][0] is None

    def test_nothing_durable_raises_for_the_host_and_says_so_on_the_last_delivery(self, ledger, clock, caplog):
        queues = Queues(error=StorageUnavailable("queue down"))
        w = worker(ledger, Starter(error=DevOpsUnavailable("HTTP 503")), queues, clock, max_dequeue_count=5)
        with pytest.raises(StorageUnavailable):
            w.process(queued_entry(ledger), dequeue_count=5)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("version 7 was NOT deployed" in e and "poison queue" in e for e in errors)


def test_queue_backoff_grows_from_the_base_delay():
    assert queue_backoff(1, None, base=10, jitter=lambda: 0.5) == 10
    assert queue_backoff(3, None, base=10, jitter=lambda: 0.5) == 40
    assert queue_backoff(30, None, base=60, jitter=lambda: 0.5) == 3600
    assert queue_backoff(1, 900, base=10, jitter=lambda: 0.5) == 900

"""Each failure of issue 12, played against the registered functions under the queue host
stand-in, real Azurite behind the storage fault proxy, and the TLS Azure DevOps stand-in.

Every test first checks the property (each event x rule ended as exactly one run, or one poison
message with its ERROR line), then what shows that the relay got there the right way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import pytest

from standins.harness import Delivery, RelayHarness, mlflow_delivery
from standins.outcomes import Figures, format_table
from standins.scenarios import (
    AMBIGUOUS,
    ambiguous_devops_failure,
    ambiguous_last_attempt,
    concurrent_copies,
    host_gives_up,
    parking_write_answer_lost,
    poison_send_fails_once,
    poisoned_then_delivered_again,
    queued_write_fails,
    retry_function_fails_once,
    stale_holder_is_fenced,
    takeover_finds_the_started_run,
)
from standins.storage_faults import WriteFault, queue_send
from standins.timescale import TimeScale

pytestmark = pytest.mark.azurite


ONE_RUN_EACH = {"one run": 2}
ONE_POISON_EACH = {"one poison + ERROR": 2}


def exactly_once(figures: Figures, endings: dict[str, int]) -> None:
    """No violation, and exactly the ``endings`` expected."""
    table = format_table([figures])
    print(table)  # shown with -s or on failure
    assert figures.violations == 0, table
    assert dict(figures.endings) == endings, table
    assert not [n for n in figures.notes if n.startswith("unexpected run")], table


def posts_per_pipeline(relay: RelayHarness) -> Counter[int]:
    return Counter(int(r["path"].split("/")[-2]) for r in relay.standin.requests if r["method"] == "POST")


def messages(relay: RelayHarness, decision: str, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in relay.logs.decisions(decision, level=level)]


class TestLedgerWriteFailures:
    """A failed table write must not lose the event, nor make a live claim look like a duplicate."""

    def test_failed_queued_write_still_runs_the_event_exactly_once(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        figures = queued_write_fails(relay)
        exactly_once(figures, ONE_RUN_EACH)
        assert figures.faults["ledger write of 'queued' fails (500)"] == 2
        assert figures.answers == {"202 queued": 1}
        # The ticket met the live claim: it came back after the lease, and was never a duplicate.
        assert len(messages(relay, "deferred")) == 2 and not messages(relay, "duplicate")
        assert all("retry queue" in m for m in messages(relay, "triggered"))
        [delivery_id] = figures.delivery_ids
        assert {relay.entity(delivery_id, rule)["state"] for rule in ("champion-deploy", "champion-audit")} == {
            "started"
        }

    def test_a_copy_during_the_lease_is_told_to_retry_and_still_one_run(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness()
        figures = queued_write_fails(relay, copy_during_lease=True)
        exactly_once(figures, ONE_RUN_EACH)
        # The copy meets the live claim: "retry later" (503), never a 2xx that would end it.
        assert figures.answers["503 in_progress"] >= 1 and "202 in_progress" not in figures.answers


class TestHostRedelivery:
    """The host makes a failed message visible again after visibilityTimeout; it must run."""

    def test_redelivery_after_the_retry_function_raised_starts_the_run(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(deadline=round(TimeScale().longest_deadline() - 0.05, 2))  # the longest lease accepted
        assert relay.visibility_timeout - 0.2 < relay.lease <= relay.visibility_timeout
        figures = retry_function_fails_once(relay)
        exactly_once(figures, ONE_RUN_EACH)
        assert relay.host is not None
        stats = relay.host.stats
        assert stats.failed == 2 and stats.dequeue_counts == {1: 2, 2: 2}, stats
        assert not messages(relay, "duplicate") and len(messages(relay, "triggered")) == 2

    def test_a_deadline_whose_lease_outlasts_the_visibility_timeout_is_refused(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        too_long = round(TimeScale().longest_deadline() + 0.1, 2)
        relay = harness(deadline=too_long)
        answer = relay.post(mlflow_delivery())
        assert answer.status == 500 and answer.body["error_id"], answer.body
        [line] = messages(relay, "misconfigured")
        assert f"DEVOPS_DEADLINE_SECONDS={too_long:g}" in line and "visibilityTimeout" in line
        assert relay.standin.api_requests == []

    def test_a_ticket_delivered_again_after_the_queue_gave_up_parks_it_once(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(max_attempts=1, lose_result=1.0)
        figures = poisoned_then_delivered_again(relay)
        exactly_once(figures, ONE_POISON_EACH)
        assert figures.faults["host lost a completed result"] >= 2
        assert relay.standin.runs == [] and len(messages(relay, "done")) >= 2

    def test_a_repeat_after_the_queue_gave_up_does_not_start_it_after_all(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(max_attempts=1)
        figures = poisoned_then_delivered_again(relay)
        posts = sum(posts_per_pipeline(relay).values())
        again = relay.post(mlflow_delivery_like(relay, figures))
        assert again.status == 424 and "gave up" in again.body["detail"], again.body
        assert sum(posts_per_pipeline(relay).values()) == posts and relay.standin.runs == []

    def test_a_poison_message_that_cannot_be_written_is_written_once_on_redelivery(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(max_attempts=1)
        figures = poison_send_fails_once(relay)
        exactly_once(figures, ONE_POISON_EACH)
        assert figures.faults["poison message send fails (500)"] == 2
        assert relay.host is not None and relay.host.stats.failed == 2 and relay.standin.runs == []
        assert len(messages(relay, "poisoned", logging.ERROR)) == 2  # one per rule, once it was written

    def test_a_parking_write_whose_answer_was_lost_still_writes_one_poison_message(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(max_attempts=1)
        figures = parking_write_answer_lost(relay)
        exactly_once(figures, ONE_POISON_EACH)
        assert figures.faults["'poisoned' applied, answer 500"] == 2
        assert relay.host is not None and relay.host.stats.failed == 2 and relay.standin.runs == []

    def test_after_max_dequeue_count_the_host_moves_the_original_message_to_poison(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(scale=TimeScale(0.05), deadline=0.5)  # five deliveries, four visibility timeouts
        figures = host_gives_up(relay)
        exactly_once(figures, ONE_POISON_EACH)
        assert relay.host is not None and relay.host.stats.poisoned_by_host == 2
        assert relay.host.stats.dequeue_counts == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
        copies = relay.poison_messages()
        assert {(c["v"], c["model"], c["version"], c["rule"]) for c in copies} == {
            (2, "fraud-detector", "41", "champion-deploy"),
            (2, "fraud-detector", "41", "champion-audit"),
        }
        assert all("reason" not in c for c in copies), "the host copies the message as it was"
        errors = messages(relay, "poisoned", logging.ERROR)
        assert len(errors) == 2 and all("after 5 deliveries" in e for e in errors)


class TestAmbiguousDevOpsFailures:
    """A run DevOps created without saying so is found, never started again."""

    @pytest.mark.parametrize("kind", list(AMBIGUOUS))
    def test_ambiguous_failure_starts_the_run_once(self, harness: Callable[..., RelayHarness], kind: str) -> None:
        relay = harness()
        figures = ambiguous_devops_failure(relay, kind)
        exactly_once(figures, ONE_RUN_EACH)
        assert posts_per_pipeline(relay) == {13: 1, 14: 1}

    def test_a_failing_runs_listing_defers_the_check_instead_of_posting_again(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness()
        figures = ambiguous_devops_failure(relay, "run created, then 504", listing_fails=2)
        exactly_once(figures, ONE_RUN_EACH)
        assert posts_per_pipeline(relay) == {13: 1, 14: 1}
        assert figures.answers == {"202 queued": 1}
        found = messages(relay, "duplicate")
        assert len(found) == 2 and all("found the run an earlier attempt started" in m for m in found)

    def test_an_ambiguous_last_queue_attempt_is_checked_before_it_is_parked(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness(max_attempts=1)
        figures = ambiguous_last_attempt(relay)
        exactly_once(figures, ONE_RUN_EACH)
        assert relay.poison_messages() == [] and not messages(relay, "poisoned")
        found = messages(relay, "duplicate")
        assert len(found) == 2 and all("retry queue, attempt 2: found the run" in m for m in found)

    def test_taking_over_an_expired_claim_finds_the_holders_run(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        figures = takeover_finds_the_started_run(relay)
        exactly_once(figures, ONE_RUN_EACH)
        assert posts_per_pipeline(relay) == {13: 1, 14: 1}
        assert figures.answers == {"503 unavailable": 1, "200 duplicate": 1}
        assert all("webhook: found the run" in m for m in messages(relay, "duplicate"))
        table = format_table([figures])
        for kind in (
            "devops run created, then answer after",
            "retry ticket send fails (500) x2",
            "ledger write of 'released' fails (500) x2",
        ):
            assert kind in table, table

    def test_a_stale_holder_cannot_overwrite_its_successor(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        figures, _ = stale_holder_is_fenced(relay)
        exactly_once(figures, ONE_RUN_EACH)
        assert relay.storage.late and {status for _, status in relay.storage.late} == {412}, relay.storage.late
        runs = {r.pipeline_id: r.run_id for r in relay.standin.runs}
        delivery_id = relay.standin.runs[0].template_parameters["delivery_id"]
        for pipeline, rule in ((13, "champion-deploy"), (14, "champion-audit")):
            entity = relay.entity(delivery_id, rule)
            assert (entity["state"], entity["run_id"]) == ("started", runs[pipeline])
        assert figures.answers["200 duplicate"] == 1  # the third copy: no third claim wins

    def test_concurrent_copies_start_one_run_per_rule(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        figures = concurrent_copies(relay, copies=10)
        exactly_once(figures, ONE_RUN_EACH)
        assert posts_per_pipeline(relay) == {13: 1, 14: 1}
        assert set(figures.answers) <= {"200 triggered", "200 duplicate", "503 in_progress", "503 unavailable"}
        # On the compressed clock a storage read may wait 0.4 s: ten copies on a loaded 2-core
        # machine can run one past it. That copy is answered 503 and re-sent (no sender gave up,
        # checked above); any other cause of "unavailable" is a failure.
        unavailable = messages(relay, "unavailable")
        assert all("TimeoutError" in m for m in unavailable), unavailable


class TestRefusal:
    """A permanent refusal answers 424 (not retried by MLflow) and is remembered."""

    def test_a_rule_that_needs_a_retry_is_not_hidden_behind_another_rules_refusal(
        self, harness: Callable[..., RelayHarness]
    ) -> None:
        relay = harness()
        relay.standin.declared_parameters[14] = frozenset({"model_name"})  # champion-audit refuses
        relay.standin.down_pipelines.add(13)  # champion-deploy: DevOps down ...
        relay.storage.add(WriteFault("retry ticket send fails (500)", queue_send("relay-retry")))  # ... unqueued
        delivery = mlflow_delivery()
        first = relay.post(delivery)
        assert first.status == 503 and first.body["pending"] == ["champion-deploy"], first.body
        relay.standin.down_pipelines.clear()
        second = relay.post(delivery)  # the sender's retry
        assert second.status == 424 and [r["rule"] for r in second.body["runs"]] == ["champion-deploy"]
        assert [r.pipeline_id for r in relay.standin.runs] == [13]
        assert posts_per_pipeline(relay)[14] == 1, "the refused run is not posted again"

    def test_refusal_answers_424_and_a_repeat_does_not_post_again(self, harness: Callable[..., RelayHarness]) -> None:
        relay = harness()
        relay.standin.declared_parameters[14] = frozenset({"model_name"})  # the audit pipeline refuses
        delivery = mlflow_delivery()
        [first] = relay.send(delivery)  # MLflow retries 429/500/502/503/504 only
        assert first.status == 424 and first.body["status"] == "refused"
        assert "Unexpected parameter" in first.body["detail"]
        repeats = [relay.post(delivery) for _ in range(3)]
        assert {(a.status, a.body["detail"]) for a in repeats} == {(424, first.body["detail"])}
        assert posts_per_pipeline(relay) == {13: 1, 14: 1}
        assert relay.entity(delivery.delivery_id, "champion-audit")["state"] == "refused"
        assert [r.pipeline_id for r in relay.standin.runs] == [13]
        assert len(messages(relay, "refused", logging.ERROR)) == 1


def mlflow_delivery_like(relay: RelayHarness, figures: Figures) -> Delivery:
    """The scenario's delivery again, as MLflow re-sends it (same id and body, signed anew)."""
    [delivery_id] = figures.delivery_ids
    version = next(r.relay_version for r in relay.logs.decisions("verified"))
    return mlflow_delivery(version=int(version), delivery_id=delivery_id)

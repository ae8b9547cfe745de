"""What a delivery log record holds, how a delivery's status folds, how repeated reports merge."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from relay.answers import RunOutcome, json_response, outcomes_answer
from relay.delivery_records import (
    MAX_EVENT_CHARS,
    DeliveryRecord,
    RuleRecord,
    delivery_record,
    hour_of,
    merge_delivery,
    merge_rule,
    rejection_reason,
)
from relay.ports import PipelineRun
from tests.builders import alias_event, run_request
from webhook.errors import AuthenticationFailed, MethodNotAllowed, PayloadInvalid, PayloadTooLarge, StaleEvent
from webhook.routing import PipelineRunRequest

EVENT = alias_event()


def request(rule: str) -> PipelineRunRequest:
    return run_request(rule=rule)


def rule(status: str, *, at: float = 1.0, run_id: int | None = None, forced_by: str = "") -> RuleRecord:
    return RuleRecord("deploy", status, run_id=run_id, updated_at=at, forced_by=forced_by)


class TestRecordOfAnAnswer:
    def test_holds_the_ids_the_answer_and_each_rules_run(self):
        outcomes = [
            RunOutcome(request("deploy"), "triggered", run=PipelineRun("deploy", 13, 41, "https://r/41")),
            RunOutcome(request("audit"), "queued", detail="HTTP 503"),
        ]
        record = delivery_record(EVENT, outcomes, outcomes_answer(EVENT, outcomes), now=100.0)
        assert (record.delivery_id, record.model, record.version, record.alias) == ("d-1", "fraud", "7", "champion")
        assert (record.answer, record.http_status, record.status) == ("queued", 202, "queued")
        assert [(r.rule, r.status, r.run_id) for r in record.rules] == [
            ("audit", "queued", None),
            ("deploy", "triggered", 41),
        ]
        assert record.registry_event() == EVENT

    def test_an_oversized_event_is_not_kept_and_the_record_says_so(self):
        event = EVENT.model_copy(update={"tag_value": "x" * (MAX_EVENT_CHARS + 1)})
        record = delivery_record(event, [], json_response(200, {"status": "ignored", "detail": "no rule"}), now=1.0)
        assert not record.replayable and "too large to keep" in record.detail
        with pytest.raises(ValueError, match="no stored event"):
            record.registry_event()

    def test_json_shape_has_the_documented_keys(self):
        record = DeliveryRecord(
            "d-1",
            1.0,
            "mlflow",
            "e",
            "fraud",
            "7",
            "triggered",
            200,
            rules=(RuleRecord("deploy", "triggered", run_id=41),),
        )
        shown = record.as_json()
        assert {"delivery_id", "status", "model", "version", "detail", "runs"} <= set(shown)
        assert shown["runs"][0]["rule"] == "deploy" and shown["runs"][0]["run_id"] == 41


class TestMerging:
    """Reports race between instances: the newest wins, but never hides a run or a failure."""

    def test_a_later_duplicate_keeps_the_triggered_run(self):
        assert merge_rule(rule("triggered", run_id=41), rule("duplicate", at=2.0, run_id=41)).status == "triggered"

    def test_an_older_report_loses(self):
        assert merge_rule(rule("triggered", at=5.0, run_id=41), rule("queued", at=2.0)).status == "triggered"

    def test_the_worker_moves_queued_on_and_a_redrive_moves_poisoned_back(self):
        assert merge_rule(rule("queued"), rule("triggered", at=2.0, run_id=9)).run_id == 9
        redriven = merge_rule(rule("poisoned"), rule("queued", at=2.0, forced_by="carol"))
        assert (redriven.status, redriven.forced_by) == ("queued", "carol")
        assert merge_rule(redriven, rule("triggered", at=3.0, run_id=9)).forced_by == "carol"

    def test_a_senders_retry_adds_an_arrival_and_keeps_the_first_origin(self):
        first = DeliveryRecord(
            "d-1",
            1.0,
            "mlflow",
            "e",
            "fraud",
            "7",
            "queued",
            202,
            origin="webhook",
            first_arrived_at=1.0,
            event_json="{}",
        )
        again = DeliveryRecord(
            "d-1", 9.0, "mlflow", "e", "fraud", "7", "duplicate", 200, origin="replay", forced_by="alice"
        )
        merged = merge_delivery(first, again)
        assert (merged.arrivals, merged.answer, merged.origin, merged.first_arrived_at) == (
            2,
            "duplicate",
            "webhook",
            1.0,
        )
        assert merged.replayed_by == "alice" and merged.event_json == "{}"


class TestRejections:
    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            (StaleEvent("old"), "stale"),
            (AuthenticationFailed("bad"), "signature"),
            (PayloadInvalid("x"), "malformed"),
            (PayloadTooLarge("big"), "too_large"),
            (MethodNotAllowed("GET"), "method"),
        ],
    )
    def test_each_rejection_counts_under_a_fixed_reason(self, error, reason):
        assert rejection_reason(error) == reason

    def test_hours_are_utc_buckets_that_sort_as_text(self):
        assert hour_of(datetime(2027, 1, 15, 9, 59, tzinfo=UTC).timestamp()) == "2027011509"

"""Parsing both senders' payloads into one ``RegistryEvent``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from tests.recorded_samples import event_of
from webhook.delivery import Delivery, Sender
from webhook.errors import AuthenticationFailed, PayloadInvalid, StaleEvent
from webhook.events import (
    DATABRICKS_EVENTS,
    EventKind,
    parse_databricks_event,
    parse_mlflow_event,
)

EXPECTED_RECORDED = {
    "registered_model.created": dict(
        kind=EventKind.MODEL_CREATED,
        model_name="aott-wine-model",
        version=None,
        alias=None,
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version.created": dict(
        kind=EventKind.VERSION_CREATED,
        model_name="aott-wine-model",
        version="1",
        alias=None,
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version_tag.set": dict(
        kind=EventKind.TAG_SET,
        model_name="aott-wine-model",
        version="1",
        alias=None,
        tag_key="validation_status",
        tag_value="approved",
        is_test=False,
    ),
    "model_version_tag.deleted": dict(
        kind=EventKind.TAG_DELETED,
        model_name="aott-wine-model",
        version="1",
        alias=None,
        tag_key="validation_status",
        tag_value=None,
        is_test=False,
    ),
    "model_version_alias.created": dict(
        kind=EventKind.ALIAS_SET,
        model_name="aott-wine-model",
        version="1",
        alias="champion",
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version_alias.deleted": dict(
        kind=EventKind.ALIAS_DELETED,
        model_name="aott-wine-model",
        version=None,
        alias="champion",
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version.created.v2": dict(
        kind=EventKind.VERSION_CREATED,
        model_name="aott-wine-model",
        version="2",
        alias=None,
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version_alias.created.moved": dict(
        kind=EventKind.ALIAS_SET,
        model_name="aott-wine-model",
        version="2",
        alias="champion",
        tag_key=None,
        tag_value=None,
        is_test=False,
    ),
    "model_version_alias.created.test": dict(
        kind=EventKind.ALIAS_SET,
        model_name="example_model",
        version="1",
        alias="example_alias",
        tag_key=None,
        tag_value=None,
        is_test=True,
    ),
}


class TestRecordedMlflowEvents:
    """Every recorded delivery parses into the right event."""

    @pytest.mark.parametrize("name", sorted(EXPECTED_RECORDED))
    def test_recorded_delivery_parses(self, recorded_deliveries, name):
        sample = recorded_deliveries[name]
        delivery = Delivery.from_http(sample.headers, sample.body)
        assert delivery.sender is Sender.MLFLOW
        event = delivery.parse(now=sample.timestamp + 5, max_age=300)
        assert event.source == "mlflow"
        assert event.event == event_of(name)
        assert event.delivery_id == sample.delivery_id
        assert {k: getattr(event, k) for k in EXPECTED_RECORDED[name]} == EXPECTED_RECORDED[name]
        assert event.event_time == datetime.fromisoformat(sample.document["timestamp"])
        assert event.event_time.tzinfo is not None

    def test_every_recorded_sample_has_an_expectation(self, recorded_deliveries):
        assert set(recorded_deliveries) == set(EXPECTED_RECORDED)


class TestMlflowEvents:
    def _parse(self, document):
        return parse_mlflow_event(json.dumps(document).encode(), delivery_id="d-1")

    @pytest.mark.parametrize(
        ("entity", "action"),
        [
            ("prompt_version", "created"),
            ("prompt", "created"),
            ("prompt_alias", "created"),
            ("prompt_version_tag", "set"),
            ("experiment", "deleted"),
        ],
    )
    def test_prompt_and_unknown_entities_parse_as_other(self, entity, action):
        event = self._parse(
            {
                "entity": entity,
                "action": action,
                "timestamp": "2026-11-28T15:29:00+00:00",
                "data": {"name": "qa-prompt", "version": 2, "template": "Hi {{name}}"},
            }
        )
        assert event.kind is EventKind.OTHER
        assert event.event == f"{entity}.{action}"
        assert event.model_name == "qa-prompt"

    def test_unknown_entity_without_a_name_still_parses(self):
        event = self._parse({"entity": "thing", "action": "created", "timestamp": "2026-11-28T15:29:00Z", "data": {}})
        assert event.kind is EventKind.OTHER

    def test_numeric_version_is_text(self):
        event = self._parse(
            {
                "entity": "model_version",
                "action": "created",
                "timestamp": "2026-11-28T15:29:00Z",
                "data": {"name": "m", "version": 7},
            }
        )
        assert event.version == "7"

    def test_naive_timestamp_is_taken_as_utc(self):
        event = self._parse(
            {
                "entity": "registered_model",
                "action": "created",
                "timestamp": "2026-11-28T15:29:00",
                "data": {"name": "m"},
            }
        )
        assert event.event_time == datetime(2026, 11, 28, 15, 29, tzinfo=UTC)

    def test_workspace_field_of_mlflow_3_18_is_kept(self):
        # MLflow 3.18 with MLFLOW_ENABLE_WORKSPACES adds "workspace" next to "data".
        document = {"entity": "model_version", "action": "created", "timestamp": "2026-11-28T15:29:00Z"}
        event = self._parse({**document, "data": {"name": "m", "version": "1"}, "workspace": "team-a"})
        assert event.workspace == "team-a"

    @pytest.mark.parametrize("extra", [{}, {"workspace": None}, {"workspace": ""}])
    def test_delivery_without_a_workspace_has_none(self, extra):
        document = {"entity": "model_version", "action": "created", "timestamp": "2026-11-28T15:29:00Z"}
        event = self._parse({**document, "data": {"name": "m", "version": "1"}, **extra})
        assert event.workspace is None

    def test_version_created_without_version_names_the_field(self):
        with pytest.raises(PayloadInvalid, match=r"data\.version"):
            self._parse(
                {
                    "entity": "model_version",
                    "action": "created",
                    "timestamp": "2026-11-28T15:29:00Z",
                    "data": {"name": "m"},
                }
            )

    def test_alias_created_without_alias_names_the_field(self):
        with pytest.raises(PayloadInvalid, match=r"data\.alias"):
            self._parse(
                {
                    "entity": "model_version_alias",
                    "action": "created",
                    "timestamp": "2026-11-28T15:29:00Z",
                    "data": {"name": "m", "version": "1"},
                }
            )

    @pytest.mark.parametrize("missing", ["entity", "action", "timestamp", "data"])
    def test_missing_top_level_field_is_named(self, missing):
        document = {
            "entity": "model_version",
            "action": "created",
            "timestamp": "2026-11-28T15:29:00Z",
            "data": {"name": "m", "version": "1"},
        }
        del document[missing]
        with pytest.raises(PayloadInvalid, match=f"'{missing}'"):
            self._parse(document)

    def test_missing_model_name_is_named(self):
        with pytest.raises(PayloadInvalid, match="'name'"):
            self._parse(
                {
                    "entity": "model_version",
                    "action": "created",
                    "timestamp": "2026-11-28T15:29:00Z",
                    "data": {"version": "1"},
                }
            )

    @pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
    def test_malformed_body_is_payload_invalid(self, body):
        with pytest.raises(PayloadInvalid):
            parse_mlflow_event(body, delivery_id="d")


def _dbx(**fields):
    document = {
        "event": "MODEL_VERSION_CREATED",
        "webhook_id": "w1",
        "event_timestamp": 1_764_000_000_000,
        "model_name": "wine",
        "version": "3",
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


class TestDatabricksEvents:
    """The 12 registry webhook event types of the Databricks workspace Model Registry."""

    ALL_EVENTS: ClassVar[list[tuple[str, EventKind]]] = [
        ("MODEL_VERSION_CREATED", EventKind.VERSION_CREATED),
        ("MODEL_VERSION_TRANSITIONED_STAGE", EventKind.STAGE_TRANSITIONED),
        ("TRANSITION_REQUEST_CREATED", EventKind.TRANSITION_REQUESTED),
        ("COMMENT_CREATED", EventKind.COMMENT_CREATED),
        ("REGISTERED_MODEL_CREATED", EventKind.MODEL_CREATED),
        ("MODEL_VERSION_TAG_SET", EventKind.TAG_SET),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", EventKind.STAGE_TRANSITIONED),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", EventKind.STAGE_TRANSITIONED),
        ("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", EventKind.STAGE_TRANSITIONED),
        ("TRANSITION_REQUEST_TO_STAGING_CREATED", EventKind.TRANSITION_REQUESTED),
        ("TRANSITION_REQUEST_TO_PRODUCTION_CREATED", EventKind.TRANSITION_REQUESTED),
        ("TRANSITION_REQUEST_TO_ARCHIVED_CREATED", EventKind.TRANSITION_REQUESTED),
    ]

    def test_the_table_lists_all_twelve(self):
        assert {name for name, _ in self.ALL_EVENTS} == set(DATABRICKS_EVENTS)

    @pytest.mark.parametrize(("name", "kind"), ALL_EVENTS)
    def test_every_event_type_parses(self, name, kind):
        event = parse_databricks_event(_dbx(event=name, to_stage="Production", from_stage="Staging"))
        assert (event.source, event.event, event.kind, event.model_name, event.version) == (
            "databricks",
            name,
            kind,
            "wine",
            "3",
        )
        assert event.to_stage == "Production" and event.from_stage == "Staging"
        assert event.event_time == datetime.fromtimestamp(1_764_000_000, tz=UTC)
        assert event.delivery_id.startswith("dbx-")

    def test_unknown_extra_fields_are_ignored(self):
        event = parse_databricks_event(_dbx(new_field={"nested": [1]}, another="x"))
        assert event.kind is EventKind.VERSION_CREATED

    def test_unknown_event_names_the_field(self):
        with pytest.raises(PayloadInvalid, match="'event'") as caught:
            parse_databricks_event(_dbx(event="MODEL_VERSION_EXPLODED"))
        assert "MODEL_VERSION_EXPLODED" in caught.value.detail

    @pytest.mark.parametrize("missing", ["event", "webhook_id", "event_timestamp", "model_name"])
    def test_missing_required_field_is_named(self, missing):
        document = json.loads(_dbx())
        del document[missing]
        with pytest.raises(PayloadInvalid, match=f"'{missing}'"):
            parse_databricks_event(json.dumps(document).encode())

    def test_integer_version_is_text(self):
        assert parse_databricks_event(_dbx(version=5)).version == "5"

    def test_tag_list_fills_tag_key_and_value(self):
        event = parse_databricks_event(_dbx(event="MODEL_VERSION_TAG_SET", tags=[{"key": "deploy", "value": "true"}]))
        assert (event.tag_key, event.tag_value) == ("deploy", "true")

    def test_tag_mapping_fills_tag_key_and_value(self):
        event = parse_databricks_event(_dbx(event="MODEL_VERSION_TAG_SET", tags={"deploy": "true"}))
        assert (event.tag_key, event.tag_value) == ("deploy", "true")

    def test_generic_and_specific_transition_events_share_a_delivery_id(self):
        change = dict(to_stage="Production", from_stage="Staging")
        generic = parse_databricks_event(_dbx(event="MODEL_VERSION_TRANSITIONED_STAGE", webhook_id="a", **change))
        specific = parse_databricks_event(
            _dbx(event="MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", webhook_id="b", text="other text", **change)
        )
        assert generic.delivery_id == specific.delivery_id

    def test_generic_and_specific_transition_requests_share_a_delivery_id(self):
        generic = parse_databricks_event(_dbx(event="TRANSITION_REQUEST_CREATED", to_stage="Production"))
        specific = parse_databricks_event(_dbx(event="TRANSITION_REQUEST_TO_PRODUCTION_CREATED", to_stage="Production"))
        assert generic.delivery_id == specific.delivery_id

    def test_different_changes_get_different_delivery_ids(self):
        a = parse_databricks_event(_dbx(event="MODEL_VERSION_TRANSITIONED_STAGE", to_stage="Production"))
        b = parse_databricks_event(_dbx(event="MODEL_VERSION_TRANSITIONED_STAGE", to_stage="Staging"))
        c = parse_databricks_event(
            _dbx(event="MODEL_VERSION_TRANSITIONED_STAGE", to_stage="Production", event_timestamp=1_764_000_000_001)
        )
        d = parse_databricks_event(_dbx(event="MODEL_VERSION_CREATED"))
        assert len({a.delivery_id, b.delivery_id, c.delivery_id, d.delivery_id}) == 4

    def test_specific_event_answers_to_the_generic_name(self):
        event = parse_databricks_event(_dbx(event="MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"))
        assert event.event_names == {"MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "MODEL_VERSION_TRANSITIONED_STAGE"}

    @pytest.mark.parametrize("timestamp", [0, -5, "soon"])
    def test_invalid_event_timestamp_is_named(self, timestamp):
        with pytest.raises(PayloadInvalid, match="event_timestamp"):
            parse_databricks_event(_dbx(event_timestamp=timestamp))


class TestDelivery:
    """Telling the senders apart and checking Databricks freshness from the signed body."""

    def test_header_names_are_case_insensitive(self):
        delivery = Delivery.from_http({"X-DATABRICKS-SIGNATURE": "ab"}, b"{}")
        assert delivery.sender is Sender.DATABRICKS

    def test_unsigned_request_is_rejected(self):
        with pytest.raises(AuthenticationFailed, match="unsigned"):
            _ = Delivery.from_http({"Content-Type": "application/json"}, b"{}").sender

    def test_databricks_stale_event_timestamp_is_rejected_on_parse(self):
        body = _dbx()
        now = 1_764_000_000 + 601
        with pytest.raises(StaleEvent):
            Delivery.from_http({"X-Databricks-Signature": "00"}, body).parse(now=now, max_age=600)

    def test_databricks_future_event_timestamp_is_rejected_on_parse(self):
        with pytest.raises(StaleEvent, match="future"):
            Delivery.from_http({"X-Databricks-Signature": "00"}, _dbx()).parse(now=1_764_000_000 - 120, max_age=600)

    def test_databricks_fresh_event_parses(self):
        event = Delivery.from_http({"X-Databricks-Signature": "00"}, _dbx()).parse(now=1_764_000_010, max_age=600)
        assert event.model_name == "wine"

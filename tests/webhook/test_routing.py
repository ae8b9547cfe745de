"""Routing: which rules match an event, and the parameters their runs get."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from webhook.delivery import Delivery
from webhook.errors import ConfigurationError
from webhook.events import EventKind, RegistryEvent, parse_databricks_event
from webhook.routing import DEFAULT_PARAMETERS, route_event
from webhook.rules import PLACEHOLDERS, parse_rules

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "routes.yaml"
EVENT_TIME = datetime(2026, 11, 28, 15, 29, 0, 545965, tzinfo=UTC)


def rules(text: str):
    return parse_rules(textwrap.dedent(text))


def event(**fields) -> RegistryEvent:
    values = dict(
        source="databricks",
        event="MODEL_VERSION_TRANSITIONED_STAGE",
        kind=EventKind.STAGE_TRANSITIONED,
        model_name="wine-quality",
        version="3",
        from_stage="Staging",
        to_stage="Production",
        delivery_id="dbx-1",
        event_time=EVENT_TIME,
    )
    values.update(fields)
    return RegistryEvent(**values)


def alias_event(alias="champion", model="wine-quality", **fields) -> RegistryEvent:
    return event(
        source="mlflow",
        event="model_version_alias.created",
        kind=EventKind.ALIAS_SET,
        alias=alias,
        model_name=model,
        from_stage=None,
        to_stage=None,
        delivery_id="d-1",
        **fields,
    )


def fired(document, ev) -> list[str]:
    return [r.rule for r in route_event(document, ev, default_project="MLOps")]


class TestRuleMatching:
    def test_fan_out_fires_every_matching_rule_in_order(self):
        document = rules("""
            rules:
              - {name: deploy, pipeline_id: 1, when: {to_stage: Production}}
              - {name: never, pipeline_id: 2, when: {to_stage: Staging}}
              - {name: notify, pipeline_id: 3, when: {model: "wine-*"}}
        """)
        runs = route_event(document, event(), default_project="MLOps")
        assert [(r.rule, r.pipeline_id) for r in runs] == [("deploy", 1), ("notify", 3)]

    @pytest.mark.parametrize(
        ("pattern", "matches"),
        [
            ("wine-*", True),
            ("wine-qualit?", True),
            ("[vw]ine-quality", True),
            ("beer-*", False),
            ("Wine-*", False),
            ("wine", False),
        ],
    )
    def test_model_globs(self, pattern, matches):
        document = rules(f"""
            rules:
              - {{name: r, pipeline_id: 1, when: {{model: "{pattern}"}}}}
        """)
        assert fired(document, event()) == (["r"] if matches else [])

    @pytest.mark.parametrize(
        ("pattern", "matches"),
        [
            ("main.ml.wine", True),
            ("main.ml.*", True),
            ("main.*.wine", True),
            ("*.wine", True),
            ("main.ml", False),
            ("dev.ml.*", False),
            ("main.ml.wine-*", False),
        ],
    )
    def test_model_globs_match_unity_catalog_full_names(self, pattern, matches):
        document = rules(f"""
            rules:
              - {{name: r, pipeline_id: 1, when: {{model: "{pattern}"}}}}
        """)
        assert fired(document, alias_event(model="main.ml.wine")) == (["r"] if matches else [])

    def test_workspace_condition_matches_globs_on_the_delivery_workspace(self):
        document = rules("""
            rules:
              - {name: team-a, pipeline_id: 1, when: {workspace: team-a}}
              - {name: teams, pipeline_id: 2, when: {workspace: ["team-*", ops]}}
              - {name: anywhere, pipeline_id: 3, when: {alias: champion}}
        """)
        assert fired(document, alias_event(workspace="team-a")) == ["team-a", "teams", "anywhere"]
        assert fired(document, alias_event(workspace="ops")) == ["teams", "anywhere"]
        assert fired(document, alias_event(workspace="Team-a")) == ["anywhere"]

    def test_workspace_condition_never_matches_a_delivery_without_workspace(self):
        document = rules("""
            rules:
              - {name: any-workspace, pipeline_id: 1, when: {workspace: "*"}}
        """)
        assert fired(document, alias_event()) == []
        assert fired(document, event()) == []

    def test_workspace_placeholder_is_the_delivery_workspace(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, parameters: {target: "{workspace}/{model_name}"}}
        """)
        [with_workspace] = route_event(document, alias_event(workspace="team-a"), default_project="MLOps")
        [without] = route_event(document, alias_event(), default_project="MLOps")
        assert with_workspace.template_parameters == {"target": "team-a/wine-quality"}
        assert without.template_parameters == {"target": "/wine-quality"}

    def test_list_conditions_match_any_value(self):
        document = rules("""
            rules:
              - name: r
                pipeline_id: 1
                when: {to_stage: [Staging, Production], model: [beer, "wine-*"]}
        """)
        assert fired(document, event()) == ["r"]
        assert fired(document, event(to_stage="Archived")) == []

    def test_stage_conditions_ignore_case(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {to_stage: production, from_stage: [none, STAGING]}}
        """)
        assert fired(document, event()) == ["r"]

    def test_from_stage_none_is_the_databricks_string(self):
        document = parse_rules(SHIPPED_RULES.read_text(encoding="utf-8"))
        assert fired(document, event(to_stage="Staging", from_stage="None")) == ["staging"]
        assert fired(document, event(to_stage="Staging", from_stage="Production")) == []

    def test_stage_condition_never_matches_an_event_without_stage(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {to_stage: Production}}
        """)
        assert fired(document, alias_event()) == []

    def test_alias_condition_is_case_sensitive(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {event: model_version_alias.created, alias: champion}}
        """)
        assert fired(document, alias_event("champion")) == ["r"]
        assert fired(document, alias_event("Champion")) == []
        assert fired(document, alias_event("challenger")) == []

    def test_event_names_in_mlflow_form(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {event: [model_version_tag.set]}}
        """)
        tag = event(source="mlflow", event="model_version_tag.set", kind=EventKind.TAG_SET, tag_key="k")
        assert fired(document, tag) == ["r"]
        assert fired(document, alias_event()) == []

    def test_tag_condition_with_yaml_true_is_coerced_to_text(self):
        document = rules("""
            rules:
              - name: r
                pipeline_id: 1
                when: {tag: {key: deploy, value: true}}
        """)
        assert document.rules[0].when.tag.value == "true"
        tag = dict(source="mlflow", event="model_version_tag.set", kind=EventKind.TAG_SET, tag_key="deploy")
        assert fired(document, event(**tag, tag_value="true")) == ["r"]
        assert fired(document, event(**tag, tag_value="false")) == []
        assert fired(document, event(**{**tag, "tag_key": "other"}, tag_value="true")) == []

    def test_tag_condition_without_value_matches_any_value(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {tag: {key: deploy}}}
        """)
        assert fired(document, event(kind=EventKind.TAG_SET, tag_key="deploy", tag_value="x")) == ["r"]
        assert fired(document, event()) == []

    def test_source_condition(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {source: mlflow}}
        """)
        assert fired(document, alias_event()) == ["r"]
        assert fired(document, event()) == []

    @pytest.mark.parametrize(
        "name", ["TRANSITION_REQUEST_CREATED", "TRANSITION_REQUEST_TO_PRODUCTION_CREATED", "COMMENT_CREATED"]
    )
    def test_rule_without_event_never_matches_requests_or_comments(self, name):
        document = rules(
            """
            rules:
              - {name: any-production, pipeline_id: 1, when: {to_stage: Production}}
              - {name: everything, pipeline_id: 2}
              - {name: named, pipeline_id: 3, when: {event: NAME}}
        """.replace("NAME", name)
        )
        body = json.dumps(
            {
                "event": name,
                "webhook_id": "w",
                "event_timestamp": 1_764_000_000_000,
                "model_name": "wine-quality",
                "version": "3",
                "to_stage": "Production",
            }
        ).encode()
        assert fired(document, parse_databricks_event(body)) == ["named"]

    def test_generic_transition_rule_matches_specific_event(self):
        document = rules("""
            rules:
              - {name: generic, pipeline_id: 1, when: {event: MODEL_VERSION_TRANSITIONED_STAGE}}
              - {name: specific-staging, pipeline_id: 2, when: {event: MODEL_VERSION_TRANSITIONED_TO_STAGING}}
        """)
        body = json.dumps(
            {
                "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
                "webhook_id": "w",
                "event_timestamp": 1_764_000_000_000,
                "model_name": "m",
                "version": "1",
                "to_stage": "Production",
                "from_stage": "Staging",
            }
        ).encode()
        assert fired(document, parse_databricks_event(body)) == ["generic"]

    def test_event_condition_ignores_case(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {event: model_version_transitioned_stage}}
        """)
        assert fired(document, event()) == ["r"]

    def test_other_events_match_no_rule_without_event(self):
        document = parse_rules(SHIPPED_RULES.read_text(encoding="utf-8") + "\n  - {name: all, pipeline_id: 9}\n")
        other = event(source="mlflow", event="prompt_version.created", kind=EventKind.OTHER, to_stage=None)
        assert fired(document, other) == []


class TestTestPayloads:
    """MLflow's ``test_webhook`` sends ``example_model``: ignored unless a rule names it."""

    def test_recorded_test_delivery_matches_no_shipped_rule(self, recorded_deliveries):
        sample = recorded_deliveries["model_version_alias.created.test"]
        ev = Delivery.from_http(sample.headers, sample.body).parse(now=sample.timestamp, max_age=60)
        document = parse_rules(SHIPPED_RULES.read_text(encoding="utf-8"))
        catch_all = rules("""
            rules:
              - {name: any-alias, pipeline_id: 1, when: {event: model_version_alias.created}}
              - {name: glob, pipeline_id: 2, when: {model: "*"}}
        """)
        assert fired(document, ev) == []
        assert fired(catch_all, ev) == []

    def test_recorded_test_delivery_matches_a_rule_naming_example_model(self, recorded_deliveries):
        sample = recorded_deliveries["model_version_alias.created.test"]
        ev = Delivery.from_http(sample.headers, sample.body).parse(now=sample.timestamp, max_age=60)
        document = rules("""
            rules:
              - {name: smoke, pipeline_id: 1, when: {model: example_model, event: model_version_alias.created}}
        """)
        assert fired(document, ev) == ["smoke"]

    def test_recorded_champion_alias_matches_the_shipped_champion_rule(self, recorded_deliveries):
        sample = recorded_deliveries["model_version_alias.created"]
        ev = Delivery.from_http(sample.headers, sample.body).parse(now=sample.timestamp, max_age=60)
        assert fired(parse_rules(SHIPPED_RULES.read_text(encoding="utf-8")), ev) == ["champion-deploy"]


class TestParameters:
    def test_every_placeholder_is_filled(self):
        params = {name: "{" + name + "}" for name in sorted(PLACEHOLDERS)}
        document = parse_rules(json.dumps({"rules": [{"name": "r", "pipeline_id": 1, "parameters": params}]}))
        ev = event(
            source="mlflow",
            event="model_version_tag.set",
            kind=EventKind.TAG_SET,
            alias="champion",
            tag_key="deploy",
            tag_value="true",
            delivery_id="d-42",
        )
        [run] = route_event(document, ev, default_project="MLOps")
        assert run.template_parameters == {
            "alias": "champion",
            "delivery_id": "d-42",
            "event": "model_version_tag.set",
            "event_time": "2026-11-28T15:29:00.545965+00:00",
            "from_stage": "Staging",
            "model_name": "wine-quality",
            "source": "mlflow",
            "tag_key": "deploy",
            "tag_value": "true",
            "to_stage": "Production",
            "version": "3",
            "workspace": "",
        }
        assert datetime.fromisoformat(run.template_parameters["event_time"]) == EVENT_TIME

    def test_placeholders_mix_with_text_and_literal_braces(self):
        document = rules("""
            rules:
              - name: r
                pipeline_id: 1
                parameters: {label: "{model_name}@v{version} {{literal}}", count: 3, flag: true}
        """)
        [run] = route_event(document, event(), default_project="MLOps")
        assert run.template_parameters == {"label": "wine-quality@v3 {literal}", "count": "3", "flag": "true"}

    def test_default_parameters_when_parameters_omitted(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, when: {event: model_version_alias.created}}
        """)
        [run] = route_event(document, alias_event(), default_project="MLOps")
        assert run.template_parameters == {
            "model_name": "wine-quality",
            "model_version": "3",
            "event": "model_version_alias.created",
            "from_stage": "",
            "to_stage": "",
            "alias": "champion",
            "delivery_id": "d-1",
        }
        assert set(run.template_parameters) == set(DEFAULT_PARAMETERS)

    def test_default_parameters_for_a_stage_transition(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1}
        """)
        [run] = route_event(document, event(version=None), default_project="MLOps")
        assert run.template_parameters["alias"] == ""
        assert run.template_parameters["model_version"] == ""
        assert run.template_parameters["to_stage"] == "Production"

    def test_empty_parameters_send_none(self):
        document = rules("""
            rules:
              - {name: r, pipeline_id: 1, parameters: {}}
        """)
        [run] = route_event(document, event(), default_project="MLOps")
        assert run.template_parameters == {}

    def test_project_and_branch_come_from_the_rule_or_the_default(self):
        document = rules("""
            rules:
              - {name: a, pipeline_id: 1}
              - {name: b, pipeline_id: 2, project: Other Project, branch: refs/heads/release}
        """)
        a, b = route_event(document, event(), default_project="MLOps")
        assert (a.project, a.branch) == ("MLOps", None)
        assert (b.project, b.branch) == ("Other Project", "refs/heads/release")
        assert b.idempotency_key == "dbx-1:b"
        assert (b.model_name, b.version, b.delivery_id) == ("wine-quality", "3", "dbx-1")


class TestReservedTags:
    """The deployment's own ``deployment.*``/``validation.*`` tags never start a pipeline (no retrigger loop)."""

    @pytest.mark.parametrize("key", ["deployment.status", "validation.message", "Deployment.pipeline_run"])
    def test_a_rule_naming_a_reserved_tag_is_refused_at_load_time(self, key):
        with pytest.raises(ConfigurationError, match=r"rule 'loop' \(#1\) field 'when.tag.key'.*is reserved"):
            rules(f"""
                rules:
                  - {{name: loop, pipeline_id: 1, when: {{event: model_version_tag.set, tag: {{key: "{key}"}}}}}}
            """)

    @pytest.mark.parametrize("key", ["deployment.status", "deployment.pipeline_status", "validation.status"])
    def test_a_reserved_tag_event_matches_no_rule_even_a_catch_all(self, key):
        document = rules("""
            rules:
              - {name: all-tags, pipeline_id: 1, when: {event: [model_version_tag.set, MODEL_VERSION_TAG_SET]}}
              - {name: any-wine, pipeline_id: 2, when: {model: "wine-*"}}
        """)
        mlflow_tag = event(
            source="mlflow",
            event="model_version_tag.set",
            kind=EventKind.TAG_SET,
            tag_key=key,
            tag_value="validated",
            from_stage=None,
            to_stage=None,
        )
        databricks_tag = event(
            event="MODEL_VERSION_TAG_SET", kind=EventKind.TAG_SET, tag_key=key, from_stage=None, to_stage=None
        )
        assert fired(document, mlflow_tag) == []
        assert fired(document, databricks_tag) == []

    def test_other_tags_still_route(self):
        document = rules("""
            rules:
              - {name: all-tags, pipeline_id: 1, when: {event: model_version_tag.set}}
        """)
        deploy_tag = event(
            source="mlflow",
            event="model_version_tag.set",
            kind=EventKind.TAG_SET,
            tag_key="deploy",
            tag_value="true",
            from_stage=None,
            to_stage=None,
        )
        assert fired(document, deploy_tag) == ["all-tags"]

    def test_shipped_rules_route_none_of_the_tags_the_deployment_writes(self):
        document = parse_rules(SHIPPED_RULES.read_text())
        for key in ("deployment.status", "deployment.pipeline_status", "validation.status"):
            for source, name in (("mlflow", "model_version_tag.set"), ("databricks", "MODEL_VERSION_TAG_SET")):
                tag = event(
                    source=source, event=name, kind=EventKind.TAG_SET, tag_key=key, from_stage=None, to_stage=None
                )
                assert fired(document, tag) == [], (source, key)

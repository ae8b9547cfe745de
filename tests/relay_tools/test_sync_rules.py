"""What ``routes.yaml`` asks each sender for: events, per-model webhooks, model update triggers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from relay_tools.sync_rules import TriggerSpec, databricks_webhooks, mlflow_events, uc_triggers
from webhook.errors import ConfigurationError
from webhook.rules import RouteRules, parse_rules

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "routes.yaml"


def rules(text: str) -> RouteRules:
    return parse_rules(textwrap.dedent(text))


class TestMlflowEvents:
    """One registry-wide webhook: the union of the MLflow events any rule can match."""

    def test_shipped_rules_need_alias_events_only(self) -> None:
        assert mlflow_events(parse_rules(SHIPPED_RULES.read_text()), workspace=None) == (
            ("model_version_alias.created",),
            [],
        )

    def test_conditions_narrow_a_rule_without_event(self) -> None:
        document = rules("""
            rules:
              - {name: any, pipeline_id: 1, when: {model: "wine-*", tag: {key: deploy, value: "true"}}}
              - {name: alias, pipeline_id: 2, when: {alias: champion}}
              - {name: stage, pipeline_id: 3, when: {to_stage: Production}}
              - {name: dbx, pipeline_id: 4, when: {source: databricks}}
        """)
        events, notes = mlflow_events(document, workspace=None)
        assert events == ("model_version_tag.set", "model_version_alias.created", "model_version_alias.deleted")
        assert notes == []

    def test_explicit_events_are_taken_as_named_even_prompt_events(self) -> None:
        document = rules("""
            rules:
              - {name: v, pipeline_id: 1, when: {event: [MODEL_VERSION.CREATED, prompt_version.created]}}
              - {name: dbx, pipeline_id: 2, when: {event: MODEL_VERSION_TRANSITIONED_STAGE}}
        """)
        assert mlflow_events(document, workspace=None)[0] == ("model_version.created", "prompt_version.created")

    def test_a_rule_on_the_jobs_own_tags_is_refused_before_anything_is_registered(self) -> None:
        with pytest.raises(ConfigurationError, match=r"tag key 'deployment\.status' is reserved"):
            rules("""
                rules:
                  - {name: status, pipeline_id: 1, when: {event: model_version_tag.set, tag: {key: deployment.status}}}
            """)

    def test_tag_events_are_registered_for_tag_rules(self) -> None:
        document = rules("""
            rules:
              - {name: deploy-tag, pipeline_id: 1, when: {event: model_version_tag.set, tag: {key: deploy}}}
              - {name: alias, pipeline_id: 3, when: {event: model_version_alias.created, alias: champion}}
        """)
        events, _notes = mlflow_events(document, workspace=None)
        assert events == ("model_version_tag.set", "model_version_alias.created")

    def test_workspace_rules_count_only_in_their_workspace(self) -> None:
        document = rules("""
            rules:
              - {name: team-a, pipeline_id: 1, when: {event: model_version.created, workspace: "team-*"}}
              - {name: all, pipeline_id: 2, when: {event: model_version_alias.created, alias: champion}}
        """)
        assert mlflow_events(document, workspace="team-a")[0] == (
            "model_version.created",
            "model_version_alias.created",
        )
        events, notes = mlflow_events(document, workspace=None)
        assert events == ("model_version_alias.created",)
        assert notes == [
            "rule 'team-a' is for workspace team-*: nothing to register on a server without "
            "workspaces (MLFLOW_WORKSPACE unset)"
        ]


class TestDatabricksWebhooks:
    """Registry webhooks: per model for literal names, registry-wide for globs or no model."""

    def test_shipped_rules_need_one_registry_wide_webhook_for_the_two_stages(self) -> None:
        wanted, notes = databricks_webhooks(parse_rules(SHIPPED_RULES.read_text()))
        expected = ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION")
        assert (wanted, notes) == ({"": expected}, [])

    def test_literal_models_get_their_own_webhook_unless_the_registry_wide_one_covers_them(self) -> None:
        document = rules("""
            rules:
              - {name: wine-prod, pipeline_id: 1, when: {model: wine, to_stage: Production}}
              - {name: any-staging, pipeline_id: 2, when: {model: "w*", to_stage: [staging]}}
              - {name: beer, pipeline_id: 3, when: {model: [beer, wine], event: MODEL_VERSION_TRANSITIONED_TO_STAGING}}
              - {name: stout, pipeline_id: 4, when: {model: stout}}
        """)
        wanted, _ = databricks_webhooks(document)
        assert wanted == {
            "": ("MODEL_VERSION_TRANSITIONED_TO_STAGING",),
            "stout": (
                "MODEL_VERSION_CREATED",
                "MODEL_VERSION_TRANSITIONED_STAGE",
                "REGISTERED_MODEL_CREATED",
                "MODEL_VERSION_TAG_SET",
            ),
            "wine": ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",),
        }

    def test_a_stage_none_or_a_from_stage_only_rule_needs_the_generic_transition(self) -> None:
        document = rules("""
            rules:
              - {name: demoted, pipeline_id: 1, when: {model: wine, to_stage: [None, Production]}}
              - {name: from-staging, pipeline_id: 2, when: {model: beer, from_stage: Staging}}
              - {name: prod, pipeline_id: 3, when: {model: beer, to_stage: Production}}
        """)
        assert databricks_webhooks(document)[0] == {
            "beer": ("MODEL_VERSION_TRANSITIONED_STAGE",),
            "wine": ("MODEL_VERSION_TRANSITIONED_STAGE",),
        }

    def test_requests_are_registered_only_when_a_rule_names_them(self) -> None:
        document = rules("""
            rules:
              - {name: ask, pipeline_id: 1, when: {event: TRANSITION_REQUEST_TO_PRODUCTION_CREATED, model: wine}}
              - {name: mlflow, pipeline_id: 2, when: {alias: champion}}
        """)
        assert databricks_webhooks(document)[0] == {"wine": ("TRANSITION_REQUEST_TO_PRODUCTION_CREATED",)}


class TestUnityCatalogTriggers:
    """One bridge job per trigger: condition, the narrowest scope covering the rules, their aliases."""

    def test_shipped_rules_need_a_metastore_alias_trigger(self) -> None:
        triggers, notes = uc_triggers(parse_rules(SHIPPED_RULES.read_text()))
        assert triggers == [TriggerSpec("MODEL_ALIAS_SET", "", ("challenger", "champion"))]
        assert notes == []

    def test_scopes_are_models_schemas_or_the_metastore(self) -> None:
        document = rules("""
            rules:
              - {name: wine, pipeline_id: 1, when: {event: model_version.created, model: main.mlops.wine}}
              - {name: ml, pipeline_id: 2, when: {event: model_version_alias.created, alias: champion,
                                                  model: "main.mlops.*"}}
              - {name: one, pipeline_id: 3, when: {event: model_version_alias.created, alias: challenger,
                                                   model: main.mlops.beer}}
              - {name: any-catalog, pipeline_id: 4, when: {event: registered_model.created, model: "*.mlops.x"}}
        """)
        triggers, notes = uc_triggers(document)
        assert triggers == [
            TriggerSpec("MODEL_ALIAS_SET", "main.mlops", ("challenger", "champion")),  # the model is in the schema
            TriggerSpec("MODEL_CREATED", ""),
            TriggerSpec("MODEL_VERSION_READY", "main.mlops.wine"),
        ]
        assert notes == []

    def test_what_a_trigger_cannot_report_is_noted_per_rule(self) -> None:
        document = rules("""
            rules:
              - {name: any-alias, pipeline_id: 1, when: {event: model_version_alias.created, model: a.b.c}}
              - {name: tags, pipeline_id: 2, when: {tag: {key: deploy}, model: a.b.c}}
              - {name: deleted, pipeline_id: 3, when: {event: [model_version_alias.deleted, model_version.created],
                                                       model: a.b.c}}
              - {name: oss-name, pipeline_id: 4, when: {event: model_version.created, model: wine-quality}}
              - {name: Caps, pipeline_id: 5, when: {event: model_version.created, model: Main.ML.Wine}}
        """)
        triggers, notes = uc_triggers(document)
        assert triggers == [
            TriggerSpec("MODEL_VERSION_READY", "Main.ML.Wine"),
            TriggerSpec("MODEL_VERSION_READY", "a.b.c"),
        ]
        assert [n.split(":")[0].split(" matches")[0] for n in notes] == [
            "rule 'any-alias'",
            "rule 'tags'",
            "rule 'deleted'",
            "rule 'oss-name'",
            "rule 'Caps'",
        ]
        assert "lower case" in notes[-1] and "catalog.schema.model" in notes[-2]

    def test_more_than_ten_aliases_on_one_trigger_is_refused(self) -> None:
        aliases = ", ".join(f"a{i}" for i in range(11))
        document = rules(f"""
            rules:
              - {{name: many, pipeline_id: 1, when: {{event: model_version_alias.created, alias: [{aliases}]}}}}
        """)
        with pytest.raises(ConfigurationError, match="11 aliases; Databricks allows 10"):
            uc_triggers(document)

    def test_stage_workspace_and_databricks_only_rules_need_no_trigger(self) -> None:
        document = rules("""
            rules:
              - {name: stage, pipeline_id: 1, when: {to_stage: Production}}
              - {name: ws, pipeline_id: 2, when: {event: model_version.created, workspace: team-a}}
              - {name: dbx, pipeline_id: 3, when: {source: databricks, event: model_version.created}}
        """)
        assert uc_triggers(document) == ([], [])

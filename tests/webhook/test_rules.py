"""The rules document: validation errors that name the rule and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from webhook.errors import ConfigurationError
from webhook.rules import parse_rules

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "routes.yaml"


def rules(text: str):
    return parse_rules(textwrap.dedent(text))


class TestRulesValidation:
    """Errors name the rule (by name and position) and the field."""

    def test_duplicate_rule_names_are_refused(self):
        with pytest.raises(ConfigurationError, match="'deploy' is used twice"):
            rules("""
                rules:
                  - {name: deploy, pipeline_id: 1}
                  - {name: deploy, pipeline_id: 2}
            """)

    def test_unknown_when_key_names_rule_and_field(self):
        with pytest.raises(ConfigurationError) as caught:
            rules("""
                rules:
                  - {name: ok, pipeline_id: 1}
                  - name: prod
                    pipeline_id: 2
                    when: {stage: Production}
            """)
        assert "rule 'prod' (#2)" in caught.value.detail
        assert "when.stage" in caught.value.detail

    def test_unknown_placeholder_names_rule_parameter_and_placeholder(self):
        with pytest.raises(ConfigurationError) as caught:
            rules("""
                rules:
                  - name: prod
                    pipeline_id: 2
                    parameters: {model: "{model}"}
            """)
        detail = caught.value.detail
        assert "rule 'prod'" in detail and "parameters" in detail and "{model}" in detail

    @pytest.mark.parametrize("template", ["{model_name.__class__}", "{version[0]}", "{version!r}", "{version:>10}"])
    def test_placeholder_must_be_a_bare_name(self, template):
        with pytest.raises(ConfigurationError, match="bare name"):
            rules(f"""
                rules:
                  - name: prod
                    pipeline_id: 2
                    parameters: {{p: "{template}"}}
            """)

    def test_unbalanced_brace_is_refused(self):
        with pytest.raises(ConfigurationError, match="rule 'prod'"):
            rules("""
                rules:
                  - name: prod
                    pipeline_id: 2
                    parameters: {p: "{version"}
            """)

    @pytest.mark.parametrize("pipeline_id", ["twelve", 0, -3, "null"])
    def test_bad_pipeline_id_names_rule_and_field(self, pipeline_id):
        with pytest.raises(ConfigurationError) as caught:
            rules(f"""
                rules:
                  - name: prod
                    pipeline_id: {pipeline_id}
            """)
        assert "rule 'prod' (#1) field 'pipeline_id'" in caught.value.detail

    def test_missing_name_names_rule_position(self):
        with pytest.raises(ConfigurationError, match="rule #1 field 'name'"):
            rules("""
                rules:
                  - pipeline_id: 3
            """)

    def test_bad_yaml_is_refused(self):
        with pytest.raises(ConfigurationError, match="not valid YAML"):
            parse_rules("rules:\n  - name: [unclosed\n", origin="custom.yaml")

    def test_error_names_the_rules_file(self):
        with pytest.raises(ConfigurationError, match=r"^custom\.yaml: "):
            parse_rules("rules: 3", origin="custom.yaml")

    @pytest.mark.parametrize("text", ["", "just a string", "- a list"])
    def test_document_without_rules_is_refused(self, text):
        with pytest.raises(ConfigurationError):
            parse_rules(text)

    def test_unknown_rule_key_is_refused(self):
        with pytest.raises(ConfigurationError, match="field 'pipeline'"):
            rules("""
                rules:
                  - {name: prod, pipeline_id: 2, pipeline: 3}
            """)

    def test_shipped_rules_file_is_valid(self):
        document = parse_rules(SHIPPED_RULES.read_text(encoding="utf-8"))
        assert [r.name for r in document.rules] == ["staging", "production", "champion-deploy", "challenger-validate"]

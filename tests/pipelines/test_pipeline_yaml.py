"""pipelines/azure-pipelines.yaml: parses, takes every relay parameter, never pastes one into code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.run_databricks_job import JOB_ID_ENV, PARAMETER_ENV

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "azure-pipelines.yaml"
RELAY_PARAMETERS = ("model_name", "model_version", "event", "from_stage", "to_stage", "alias", "delivery_id")
# Keys whose string value is executed by a shell/interpreter.
SCRIPT_KEYS = {"script", "bash", "pwsh", "powershell", "inlineScript", "arguments", "scriptArguments"}
# Template expressions, macros and runtime expressions: each expands to raw text before the shell runs.
EXPANSION = re.compile(r"\$\{\{|\$\(|\$\[")


def unsafe_expansions(node: Any, path: str = "") -> list[str]:
    """Paths of script bodies that contain a pipeline expansion (the injection this file forbids)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in SCRIPT_KEYS and isinstance(value, str) and EXPANSION.search(value):
                found.append(where)
            elif key != "env":
                found.extend(unsafe_expansions(value, where))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(unsafe_expansions(item, f"{path}[{index}]"))
    return found


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"] for step in job["steps"]]


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    document = yaml.safe_load(PIPELINE.read_text())
    assert isinstance(document, dict)
    return document


class TestDeclaration:
    def test_declares_every_relay_parameter_as_a_string_with_a_default(self, pipeline: dict[str, Any]) -> None:
        declared = {p["name"]: p for p in pipeline["parameters"]}
        for name in RELAY_PARAMETERS:
            assert declared[name]["type"] == "string"
            assert declared[name]["default"] == ""
        assert all("default" in p for p in pipeline["parameters"])

    def test_only_the_relay_starts_it_on_a_current_hosted_image(self, pipeline: dict[str, Any]) -> None:
        assert pipeline["trigger"] == "none"
        assert pipeline["pr"] == "none"
        assert pipeline["pool"]["vmImage"] in {"ubuntu-24.04", "ubuntu-latest"}

    def test_talks_to_databricks_through_a_federated_service_connection(self, pipeline: dict[str, Any]) -> None:
        (step,) = [s for s in steps(pipeline) if s.get("task") == "AzureCLI@2"]
        assert "python -m pipelines.run_databricks_job" in step["inputs"]["inlineScript"]
        assert step["env"]["DATABRICKS_AUTH_TYPE"] == "azure-cli"

    def test_no_step_receives_a_long_lived_credential(self, pipeline: dict[str, Any]) -> None:
        names = [name for step in steps(pipeline) for name in step.get("env", {})]
        names += [p["name"] for p in pipeline["parameters"]]
        assert not [n for n in names if re.search(r"TOKEN|PAT$|SECRET|PASSWORD|KEY$", n, re.IGNORECASE)]

    def test_dependencies_are_pinned(self, pipeline: dict[str, Any]) -> None:
        installs = [s["script"] for s in steps(pipeline) if "pip install" in s.get("script", "")]
        assert installs and all(re.search(r'"[a-z-]+==\d', line) for line in installs)


class TestNoInterpolation:
    """Parameters reach the step as environment variables, named as the step module reads them."""

    def test_no_script_body_expands_a_parameter_or_variable(self, pipeline: dict[str, Any]) -> None:
        assert unsafe_expansions(pipeline) == []

    def test_each_relay_parameter_maps_to_the_variable_the_step_reads(self, pipeline: dict[str, Any]) -> None:
        (step,) = [s for s in steps(pipeline) if s.get("task") == "AzureCLI@2"]
        for name in RELAY_PARAMETERS:
            assert step["env"][PARAMETER_ENV[name]] == f"${{{{ parameters.{name} }}}}"
        assert step["env"][JOB_ID_ENV] == "$(DATABRICKS_JOB_ID)"

    @pytest.mark.parametrize(
        "bad",
        [
            {"jobs": [{"steps": [{"script": "python x.py --name '${{ parameters.model_name }}'"}]}]},
            {"jobs": [{"steps": [{"bash": "echo $(DATABRICKS_JOB_ID)"}]}]},
            {"jobs": [{"steps": [{"task": "AzureCLI@2", "inputs": {"inlineScript": "run $[variables.x]"}}]}]},
            {"steps": [{"powershell": '{"model": "${{ parameters.model_name }}"} | Out-File p.json'}]},
        ],
    )
    def test_the_rule_catches_interpolation_into_code(self, bad: dict[str, Any]) -> None:
        assert unsafe_expansions(bad)

    def test_the_rule_allows_env_mappings(self) -> None:
        ok = {"steps": [{"script": "python -m x", "env": {"MODEL_NAME": "${{ parameters.model_name }}"}}]}
        assert unsafe_expansions(ok) == []

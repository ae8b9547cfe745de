"""pipelines/*.yaml: deployment jobs per environment, a lock per model, the safety rules for scripts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.run_databricks_job import JOB_ID_ENV, PARAMETER_ENV
from pipelines.stage_lock import stage_id_expression

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
TEMPLATE = PIPELINES / "templates" / "model-deploy.yaml"
ENTRY_FILES = {
    "staging": PIPELINES / "model-deploy-staging.yaml",
    "production": PIPELINES / "model-deploy-production.yaml",
}
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


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def deployment(template: dict[str, Any]) -> dict[str, Any]:
    (stage,) = template["stages"]
    (job,) = stage["jobs"]
    return dict(job)


def deploy_steps(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = deployment["strategy"]["runOnce"]["deploy"]["steps"]
    return steps


def cli_steps(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in deploy_steps(deployment) if s.get("task") == "AzureCLI@2"]


class TestEntryFiles:
    """One small file per environment; both extend the same template."""

    @pytest.mark.parametrize("stage", ENTRY_FILES)
    def test_declares_every_relay_parameter_as_a_string_with_a_default(self, stage: str) -> None:
        declared = {p["name"]: p for p in load(ENTRY_FILES[stage])["parameters"]}
        for name in RELAY_PARAMETERS:
            assert (declared[name]["type"], declared[name]["default"]) == ("string", "")
        assert all("default" in p for p in declared.values())

    @pytest.mark.parametrize("stage", ENTRY_FILES)
    def test_only_the_relay_starts_it(self, stage: str) -> None:
        document = load(ENTRY_FILES[stage])
        assert (document["trigger"], document["pr"]) == ("none", "none")

    @pytest.mark.parametrize("stage", ENTRY_FILES)
    def test_targets_its_own_environment_and_service_connection_by_name(self, stage: str) -> None:
        extends = load(ENTRY_FILES[stage])["extends"]
        assert extends["template"] == "templates/model-deploy.yaml"
        fixed = {k: extends["parameters"][k] for k in ("environment", "stage_label", "service_connection")}
        # Literal names, not variables: Azure DevOps applies a resource's checks only when it knows it at compile time.
        assert fixed == {
            "environment": f"mlops-{stage}",
            "stage_label": stage,
            "service_connection": f"databricks-{stage}",
        }

    @pytest.mark.parametrize("stage", ENTRY_FILES)
    def test_passes_every_parameter_it_declares_to_the_template(self, stage: str) -> None:
        document = load(ENTRY_FILES[stage])
        passed = document["extends"]["parameters"]
        for parameter in document["parameters"]:
            assert passed[parameter["name"]] == f"${{{{ parameters.{parameter['name']} }}}}"

    def test_both_entry_files_declare_the_same_parameters(self) -> None:
        staging, production = (load(ENTRY_FILES[s])["parameters"] for s in ("staging", "production"))
        assert staging == production

    def test_the_template_declares_what_the_entry_files_pass(self, template: dict[str, Any]) -> None:
        declared = {p["name"] for p in template["parameters"]}
        for path in ENTRY_FILES.values():
            assert set(load(path)["extends"]["parameters"]) <= declared


class TestDeploymentJob:
    def test_is_a_deployment_job_targeting_the_environment(self, deployment: dict[str, Any]) -> None:
        assert deployment["deployment"] == "deploy"
        assert deployment["environment"] == "${{ parameters.environment }}"
        # The environment history lists deployments by run and job: both name the model and version.
        assert "${{ parameters.model_name }}" in deployment["displayName"]
        assert "${{ parameters.model_version }}" in deployment["displayName"]

    def test_one_lock_per_model_and_stage_and_the_newest_run_wins(self, template: dict[str, Any]) -> None:
        (stage,) = template["stages"]
        assert stage["lockBehavior"] == "runLatest"
        assert stage["stage"] == f"deploy_${{{{ parameters.stage_label }}}}_${{{{ {stage_id_expression()} }}}}"

    def test_runs_on_a_current_hosted_image_with_time_to_clean_up(self, deployment: dict[str, Any]) -> None:
        assert deployment["pool"]["vmImage"] in {"ubuntu-24.04", "ubuntu-latest"}
        assert deployment["cancelTimeoutInMinutes"] >= 5

    def test_checks_out_the_repository_for_the_step_modules(self, deployment: dict[str, Any]) -> None:
        # Deployment jobs do not check out by default.
        assert deploy_steps(deployment)[0]["checkout"] == "self"

    def test_both_azure_cli_steps_keep_the_federated_session_alive(self, deployment: dict[str, Any]) -> None:
        run, finish = cli_steps(deployment)
        for step in (run, finish):
            assert step["inputs"]["keepAzSessionActive"] is True
            assert step["inputs"]["azureSubscription"] == "${{ parameters.service_connection }}"
            assert step["env"]["DATABRICKS_AUTH_TYPE"] == "azure-cli"
        assert "python -m pipelines.run_databricks_job" in run["inputs"]["inlineScript"]
        assert "python -m pipelines.finish_deployment" in finish["inputs"]["inlineScript"]

    def test_the_write_back_runs_after_failure_cancel_and_timeout(self, deployment: dict[str, Any]) -> None:
        run, finish = cli_steps(deployment)
        assert "condition" not in run
        assert finish["condition"] == "always()"
        assert finish["env"]["PIPELINE_RESULT"] == "$(Agent.JobStatus)"
        assert finish["env"]["RUN_STATE_FILE"] == run["env"]["RUN_STATE_FILE"]

    def test_no_step_receives_a_long_lived_credential(self, template: dict[str, Any]) -> None:
        names = [n for step in deploy_steps(template["stages"][0]["jobs"][0]) for n in step.get("env", {})]
        names += [p["name"] for p in template["parameters"]]
        assert names
        assert not [n for n in names if re.search(r"TOKEN|PAT$|SECRET|PASSWORD|KEY$", n, re.IGNORECASE)]

    def test_dependencies_are_pinned(self, deployment: dict[str, Any]) -> None:
        installs = [s["script"] for s in deploy_steps(deployment) if "pip install" in s.get("script", "")]
        assert installs
        for line in installs:
            packages = re.findall(r'"([^"]+)"', line)
            assert packages and all(re.fullmatch(r"[a-z-]+==[\d.]+", p) for p in packages)


class TestNoInterpolation:
    """Parameters reach the steps as environment variables, named as the step modules read them."""

    @pytest.mark.parametrize("path", [TEMPLATE, *ENTRY_FILES.values()], ids=lambda p: p.name)
    def test_no_script_body_expands_a_parameter_or_variable(self, path: Path) -> None:
        assert unsafe_expansions(load(path)) == []

    def test_each_relay_parameter_maps_to_the_variable_the_step_reads(self, deployment: dict[str, Any]) -> None:
        run, finish = cli_steps(deployment)
        for name in RELAY_PARAMETERS:
            assert run["env"][PARAMETER_ENV[name]] == f"${{{{ parameters.{name} }}}}"
        for step in (run, finish):
            assert step["env"][JOB_ID_ENV] == "$(DATABRICKS_JOB_ID)"
            assert step["env"]["DELIVERY_ID"] == "${{ parameters.delivery_id }}"

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

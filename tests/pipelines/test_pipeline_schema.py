"""Every pipeline YAML passes Microsoft's Azure Pipelines validation, offline.

The authority is the language service the VS Code extension runs (npm
``azure-pipelines-language-service``) with the service schema that PyPI's ``check-jsonschema``
vendors. A plain JSON-schema check of the same schema is not enough: it rejects unquoted numbers
that Azure DevOps accepts (the canary below shows it), so it would push us to quote for the
checker instead of for Azure DevOps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(__file__).with_name("validate_pipelines.cjs")
PIPELINE_FILES = sorted((ROOT / "pipelines").rglob("*.yaml"))


def service_schema() -> Path:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "azure-pipelines.json"
    assert path.is_file(), f"check-jsonschema no longer vendors {path.name}; find the service schema again"
    return path


def validate(*files: Path) -> dict[str, list[dict[str, Any]]]:
    """Run the language service over ``files``; fails the test when node or the package is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the pipeline YAML check needs Node.js (see ./scripts/test)")
    done = subprocess.run(
        [node, str(VALIDATOR), str(service_schema()), *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"validator exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_repository_has_pipeline_files_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PIPELINE_FILES}
    assert {
        "pipelines/model-deploy-staging.yaml",
        "pipelines/model-deploy-production.yaml",
        "pipelines/templates/model-deploy.yaml",
    } <= names


def test_every_pipeline_yaml_is_valid_for_azure_devops() -> None:
    result = validate(*PIPELINE_FILES)

    assert {Path(f).resolve() for f in result} == set(PIPELINE_FILES)
    assert {f: d for f, d in result.items() if d} == {}


class TestTheValidatorCatchesMistakes:
    """Canaries: if these pass unnoticed, the check above proves nothing."""

    def test_misspelt_keys_and_bad_values(self, tmp_path: Path) -> None:
        broken = write(
            tmp_path,
            "broken.yaml",
            """\
            trigger: none
            lockBehavoir: runLatest
            stages:
              - stage: deploy
                lockBehavior: newest
                jobs:
                  - deployment: deploy
                    environment: mlops-production
                    strategy:
                      runOnce:
                        deploy:
                          steps:
                            - task: AzureCLI@2
                              inputs:
                                azureSubscription: databricks-production
                                scriptType: bashh
                                scriptLocation: inlineScript
                                inlineScript: echo
                                keepAzSessionActiv: true
            """,
        )

        messages = [d["message"] for d in validate(broken)[str(broken)]]

        assert any("lockBehavoir" in m for m in messages)
        assert any("sequential" in m for m in messages)  # lockBehavior: newest is not a value
        assert any('"bash"' in m for m in messages)  # scriptType: bashh
        assert any("keepAzSessionActiv" in m for m in messages)

    def test_env_must_be_a_mapping(self, tmp_path: Path) -> None:
        broken = write(
            tmp_path,
            "env-list.yaml",
            """\
            jobs:
              - deployment: deploy
                environment: mlops-staging
                strategy:
                  runOnce:
                    deploy:
                      steps:
                        - script: python -m pipelines.run_databricks_job
                          env: [MODEL_NAME]
            """,
        )

        assert [d["message"] for d in validate(broken)[str(broken)]] == ['Incorrect type. Expected "object".']


def test_unquoted_numbers_pass_the_language_service_but_not_plain_json_schema(tmp_path: Path) -> None:
    document = write(
        tmp_path,
        "numbers.yaml",
        """\
        trigger: none
        jobs:
          - job: a
            steps:
              - task: UsePythonVersion@0
                inputs:
                  versionSpec: 3.11
        """,
    )

    assert validate(document)[str(document)] == []
    plain = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.azure-pipelines", str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plain.returncode == 1
    assert "3.11 is not of type 'string'" in plain.stdout

"""The deployment package works on its own: the files publish uploads plus requirements.txt.

Builds the file set ``func azure functionapp publish`` would upload (``.funcignore`` as Core Tools
reads it), installs ``requirements.txt`` alone into a fresh virtualenv as the remote build does,
and in that virtualenv imports ``function_app`` from the copy, indexes it and answers a signed
Databricks delivery in dry-run mode. Slow (a pip install; pip's cache is reused).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay_tools.package_files import copy_file_set, publish_file_set

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe_package.py")
WEBHOOK_FUNCTION = "MLflowWebHookTransition"
TEST_SECRET = "deploy-test-secret-not-used-anywhere-else"

pytestmark = pytest.mark.e2e


def run(command: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> None:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")


def clean_environment(venv: Path) -> dict[str, str]:
    """The parent's PATH/HOME only: nothing leaks in from the developer's or CI's settings."""
    env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR", "PIP_CACHE_DIR") if k in os.environ}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def probe_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("package")
    app_dir, venv = work / "wwwroot", work / "venv"
    copy_file_set(REPO_ROOT, publish_file_set(REPO_ROOT), app_dir)
    assert (app_dir / "requirements.txt").is_file(), "requirements.txt is not in the package"

    env = clean_environment(venv)
    run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=work, timeout=120)
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
            str(app_dir / "requirements.txt"),
        ],
        env=env,
        cwd=work,
        timeout=900,
    )

    report_path, probe = work / "report.json", work / PROBE.name
    shutil.copy(PROBE, probe)  # run from outside the repository, like everything else here
    env.update(
        {
            "WEBHOOK_SECRET": TEST_SECRET,
            "DEVOPS_ORG_URL": "https://dev.azure.com/contoso",
            "DEVOPS_PROJECT": "MLOps",
            "DEVOPS_PAT": "dummy",
            "RELAY_DRY_RUN": "true",
        }
    )
    run(
        [str(venv / "bin" / "python"), "-I", str(probe), str(app_dir), str(report_path), str(REPO_ROOT)],
        env=env,
        cwd=app_dir,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(report_path.read_text())
    report["app_dir"] = str(app_dir)
    return report


def bindings_of(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    assert name in report["functions"], f"{name} not indexed; got {sorted(report['functions'])}"
    return list(report["functions"][name]["bindings"])


class TestDeploymentPackage:
    """The copied package, in a virtualenv holding requirements.txt only."""

    def test_app_is_imported_from_the_package_not_the_repository(self, probe_report: dict[str, Any]) -> None:
        assert Path(probe_report["function_app_file"]).resolve().parent == Path(probe_report["app_dir"])
        assert probe_report["modules_from_repository"] == []

    def test_webhook_is_an_anonymous_http_trigger_taking_post(self, probe_report: dict[str, Any]) -> None:
        triggers = [b for b in bindings_of(probe_report, WEBHOOK_FUNCTION) if b["type"] == "httpTrigger"]
        assert len(triggers) == 1
        trigger = triggers[0]
        # Other methods may be bound too, so the relay answers them 405 itself (see test below).
        assert "POST" in [m.upper() for m in trigger["methods"]]
        assert trigger["authLevel"].upper() == "ANONYMOUS"
        assert trigger.get("route", WEBHOOK_FUNCTION) == WEBHOOK_FUNCTION

    def test_retry_queue_trigger_uses_the_identity_based_host_storage(self, probe_report: dict[str, Any]) -> None:
        queue_triggers = [
            binding
            for function in probe_report["functions"].values()
            for binding in function["bindings"]
            if binding["type"] == "queueTrigger"
        ]
        assert len(queue_triggers) == 1, f"expected one retry queue trigger, got {queue_triggers}"
        trigger = queue_triggers[0]
        assert trigger["queueName"] in {"relay-retry", "%RETRY_QUEUE%"}
        # infra/ configures only the AzureWebJobsStorage__* identity settings.
        assert trigger.get("connection", "AzureWebJobsStorage") == "AzureWebJobsStorage"

    def test_every_function_has_exactly_one_trigger(self, probe_report: dict[str, Any]) -> None:
        for name, function in probe_report["functions"].items():
            triggers = [b for b in function["bindings"] if b["type"].endswith("Trigger")]
            assert len(triggers) == 1, f"{name}: {function['bindings']}"
            assert function["scriptFile"] == "function_app.py"

    def test_signed_delivery_is_routed_in_dry_run(self, probe_report: dict[str, Any]) -> None:
        # RELAY_DRY_RUN answers what it would start ("dry-run") instead of calling Azure DevOps.
        answer = probe_report["answers"]["signed"]
        assert answer["status_code"] == 200, answer
        assert "json" in (answer["mimetype"] or answer["headers"].get("content-type", ""))
        document = json.loads(answer["body"])
        assert document["status"] == "dry-run", answer
        assert document["runs"], "the sample Staging transition matched no rule in the shipped routes.yaml"

    def test_wrongly_signed_delivery_is_refused(self, probe_report: dict[str, Any]) -> None:
        answer = probe_report["answers"]["wrongly_signed"]
        assert answer["status_code"] == 401, answer
        assert TEST_SECRET not in answer["body"]

    def test_other_methods_are_answered_405(self, probe_report: dict[str, Any]) -> None:
        answer = probe_report["answers"]["get"]
        assert answer["status_code"] == 405, answer
        assert answer["headers"].get("allow", "").upper() == "POST"

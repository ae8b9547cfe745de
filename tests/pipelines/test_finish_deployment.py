"""pipelines/finish_deployment.py: cancel what is still running, then write the result onto the version.

The registry is a real ``mlflow server``; Databricks is the loopback stand-in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines import finish_deployment, run_state
from pipelines.agent import Agent
from pipelines.finish_deployment import Deployment, Outcome, comments_for, registry_uri_for, write_back
from pipelines.run_databricks_job import main as run_main
from standins.databricks import DatabricksStandIn, RunPlan
from tests.pipelines.conftest import JOB_ID

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)
DELIVERY = "1bfda340-c7cc-47c8-857a-e51a449e2e3d"
PIPELINE_RUN = "https://dev.azure.com/contoso/MLOps/_build/results?buildId=42"


@pytest.fixture
def model(registry: Any) -> str:
    """A fresh registered model with version 1 (the source needs no artifacts for tags)."""
    name = f"wine-{uuid.uuid4().hex[:8]}"
    registry.create_registered_model(name)
    registry.create_model_version(name, "s3://relay-tests/model")
    return name


def env_for(model: str, state_file: Path, databricks: DatabricksStandIn, **extra: str) -> dict[str, str]:
    return {
        "MODEL_NAME": model,
        "MODEL_VERSION": "1",
        "DELIVERY_ID": DELIVERY,
        "DEPLOY_ENVIRONMENT": "production",
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/",
        "SYSTEM_TEAMPROJECT": "MLOps",
        "BUILD_BUILDID": "42",
        "DATABRICKS_JOB_ID": str(JOB_ID),
        "RUN_STATE_FILE": str(state_file),
        "DATABRICKS_POLL_SECONDS": "0.01",
        "PIPELINE_RESULT": "Succeeded",
        **extra,
    }


def tags(registry: Any, model: str) -> dict[str, str]:
    return dict(registry.get_model_version(model, "1").tags)


def finish(env: dict[str, str], databricks: DatabricksStandIn, registry: Any) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = finish_deployment.main(
        env,
        workspace=databricks.workspace(),
        registry=registry,
        agent=Agent(lines.append),
        now=lambda: NOW,
        sleep=lambda s: None,
        poll=0,
    )
    return code, lines


def start_run(env: dict[str, str], databricks: DatabricksStandIn) -> int:
    """What the run step leaves behind when it is stopped early: a started run and its state file."""
    jobs = databricks.workspace().jobs
    run_id = int(jobs.run_now(job_id=JOB_ID, job_parameters={}, idempotency_token=None).run_id)
    run_state.save(Path(env["RUN_STATE_FILE"]), run_state.RunState(JOB_ID, run_id))
    return run_id


class TestAfterTheRunStep:
    """The whole pipeline job: run step, then write-back, as the template orders them."""

    def test_success_adds_the_links_to_the_outcome_the_job_recorded(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        env = env_for(model, tmp_path / "state.json", databricks)
        assert run_main(env | {"MODEL_NAME": model}, workspace=databricks.workspace(), agent=Agent(lambda s: None)) == 0
        (run,) = databricks.runs.values()
        # What the Databricks job writes when it validates (databricks_job/job.py).
        registry.set_model_version_tag(model, "1", "deployment.status", "validated")
        registry.set_model_version_tag(model, "1", "deployment.job_run", str(run.run_id))

        code, lines = finish(env, databricks, registry)

        assert code == 0
        assert tags(registry, model) == {
            "deployment.status": "validated",
            "deployment.job_run": str(run.run_id),
            "deployment.pipeline_status": "succeeded",
            "deployment.pipeline_run": PIPELINE_RUN,
            "deployment.job_run_url": databricks.run_page_url(run),
            "deployment.delivery_id": DELIVERY,
            "deployment.finished_at": "2026-11-28T15:30:00+00:00",
        }
        assert databricks.calls("POST", "/api/2.2/jobs/runs/cancel") == []
        assert any(
            line.startswith(
                f"write-back delivery_id={DELIVERY} model={model} version=1 "
                f"pipeline_status=succeeded databricks_run={run.run_id} tags=6"
            )
            for line in lines
        )

    def test_a_superseded_event_leaves_the_versions_tags_alone(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        env = env_for(model, tmp_path / "state.json", databricks)
        registry.set_model_version_tag(model, "1", "deployment.status", "validated")
        registry.set_model_version_tag(model, "1", "deployment.job_run", "7")  # an earlier, real deployment
        assert run_main(env, workspace=databricks.workspace(), agent=Agent(lambda s: None)) == 0

        code, lines = finish(env, databricks, registry)

        assert code == 0
        assert tags(registry, model) == {"deployment.status": "validated", "deployment.job_run": "7"}
        assert "the version's tags are left as they are" in lines[-1]

    def test_a_failure_the_job_could_not_record_is_recorded_as_an_error(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result="FAILED", message="Cluster terminated: spot loss")
        env = env_for(model, tmp_path / "state.json", databricks, PIPELINE_RESULT="Failed")
        assert run_main(env, workspace=databricks.workspace(), agent=Agent(lambda s: None)) == 1

        assert finish(env, databricks, registry)[0] == 0

        recorded = tags(registry, model)
        assert (recorded["deployment.status"], recorded["deployment.pipeline_status"]) == ("error", "failed")
        assert recorded["deployment.message"] == "Cluster terminated: spot loss"


class TestCancellation:
    """A cancelled or timed-out pipeline cancels its Databricks run, and the version says so."""

    def test_cancelled_pipeline_cancels_the_running_job_and_records_it(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        env = env_for(model, tmp_path / "state.json", databricks, PIPELINE_RESULT="Canceled")
        run_id = start_run(env, databricks)

        code, lines = finish(env, databricks, registry)

        assert code == 0
        assert databricks.calls("POST", "/api/2.2/jobs/runs/cancel") == [{"run_id": run_id}]
        assert databricks.runs[run_id].ended  # waited for TERMINATED before writing
        assert f"Cancelling Databricks run {run_id}: the pipeline ended Canceled while the run was RUNNING" in lines
        recorded = tags(registry, model)
        assert recorded["deployment.pipeline_status"] == "canceled"
        assert recorded["deployment.status"] == "canceled"
        assert recorded["deployment.job_run"] == str(run_id)
        assert recorded["deployment.message"] == "the pipeline ended Canceled while the run was RUNNING"

    def test_a_timed_out_wait_is_recorded_as_timed_out(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        env = env_for(model, tmp_path / "state.json", databricks, PIPELINE_RESULT="Failed", JOB_TIMEOUT_MINUTES="0.001")
        assert run_main(env, workspace=databricks.workspace(), agent=Agent(lambda s: None)) == 1

        assert finish(env, databricks, registry)[0] == 0

        recorded = tags(registry, model)
        assert (recorded["deployment.status"], recorded["deployment.pipeline_status"]) == ("timed_out", "timed_out")
        assert "still RUNNING after 0 s" in recorded["deployment.message"]
        assert len(databricks.calls("POST", "/api/2.2/jobs/runs/cancel")) >= 1

    def test_a_run_that_will_not_stop_in_time_is_still_recorded(
        self, databricks: DatabricksStandIn, registry: Any, model: str, tmp_path: Path
    ) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        env = env_for(model, tmp_path / "state.json", databricks, PIPELINE_RESULT="Canceled")
        start_run(env, databricks)
        ticks = iter(range(0, 10_000, 100))
        lines: list[str] = []

        code = finish_deployment.main(
            env,
            workspace=databricks.workspace(),
            registry=registry,
            agent=Agent(lines.append),
            now=lambda: NOW,
            sleep=lambda s: None,
            poll=0,
            timeout=150,
            clock=lambda: float(next(ticks)),
        )

        assert code == 0
        assert tags(registry, model)["deployment.message"].startswith("cancel requested; the run was still TERMINATING")


class TestWorkspaceRegistryComment:
    def test_the_comment_carries_the_same_links(self, databricks: DatabricksStandIn, registry: Any, model: str) -> None:
        deployment = Deployment(model, "1", DELIVERY, "production", PIPELINE_RUN, "Canceled")
        outcome = Outcome("canceled", "the pipeline was cancelled or timed out", 1001, "https://adb/jobs/101/runs/1001")

        write_back(
            registry,
            comments_for("databricks", databricks.workspace()),
            deployment,
            outcome,
            Agent(lambda s: None),
            now=NOW,
        )

        assert databricks.comments == [
            {
                "name": model,
                "version": "1",
                "comment": (
                    "Deployment to production: canceled (the pipeline was cancelled or timed out)\n"
                    f"Azure DevOps run: {PIPELINE_RUN}\nDatabricks run: https://adb/jobs/101/runs/1001\n"
                    f"Delivery id: {DELIVERY}"
                ),
            }
        ]
        assert tags(registry, model)["deployment.delivery_id"] == DELIVERY

    @pytest.mark.parametrize("uri", ["databricks-uc", "http://127.0.0.1:5000", "databricks://other-profile"])
    def test_registries_without_comments_get_tags_only(self, uri: str) -> None:
        assert comments_for(uri, workspace=object()) is None


class TestFailuresAreLoud:
    def test_no_run_started_means_nothing_to_cancel_or_write(
        self, databricks: DatabricksStandIn, tmp_path: Path
    ) -> None:
        code, lines = finish(
            env_for("m", tmp_path / "missing.json", databricks, PIPELINE_RESULT="Failed"), databricks, registry=None
        )

        assert code == 0
        assert lines == [
            "No Databricks run was started (pipeline Failed): nothing to cancel, and the version's tags "
            "are left as they are"
        ]
        assert databricks.requests == []

    def test_a_registry_refusal_fails_the_step_in_one_line(
        self, databricks: DatabricksStandIn, registry: Any, tmp_path: Path
    ) -> None:
        env = env_for("no-such-model", tmp_path / "state.json", databricks)
        start_run(env, databricks)

        code, lines = finish(env, databricks, registry)

        assert code == 1
        assert lines[-1].startswith("##vso[task.logissue type=error]write-back failed: RestException: ")
        assert "Traceback" not in "\n".join(lines)


class TestRegistryChoice:
    def test_the_jobs_own_registry_uri_parameter_is_used(self, databricks: DatabricksStandIn) -> None:
        databricks.jobs[JOB_ID]["parameters"][1]["default"] = "databricks-uc"
        assert registry_uri_for(databricks.workspace().jobs, JOB_ID, {}) == "databricks-uc"

    def test_an_explicit_setting_wins(self, databricks: DatabricksStandIn) -> None:
        assert (
            registry_uri_for(databricks.workspace().jobs, JOB_ID, {"REGISTRY_URI": "databricks-uc"}) == "databricks-uc"
        )
        assert databricks.requests == []

    def test_main_writes_to_the_registry_the_job_names(
        self, databricks: DatabricksStandIn, mlflow_server: Any, registry: Any, model: str, tmp_path: Path
    ) -> None:
        databricks.jobs[JOB_ID]["parameters"][1]["default"] = mlflow_server.url
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        env = env_for(model, tmp_path / "state.json", databricks, PIPELINE_RESULT="Canceled")
        start_run(env, databricks)

        code = finish_deployment.main(
            env, workspace=databricks.workspace(), agent=Agent(lambda s: None), sleep=lambda s: None, poll=0
        )

        assert code == 0
        assert tags(registry, model)["deployment.status"] == "canceled"
        assert databricks.comments == []  # an MLflow server has no comments

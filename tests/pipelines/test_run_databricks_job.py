"""pipelines/run_databricks_job.py against the loopback Databricks stand-in (TLS, Jobs API 2.2)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import run_state
from pipelines.agent import Agent
from pipelines.run_databricks_job import JobRunRequest, idempotency_token, main, request_from_env, run_step
from standins.databricks import STANDIN_TOKEN, DatabricksStandIn, RunPlan
from tests.pipelines.conftest import JOB_ID

ROOT = Path(__file__).resolve().parents[2]
DELIVERY = "1bfda340-c7cc-47c8-857a-e51a449e2e3d"
ENV = {
    "DATABRICKS_JOB_ID": str(JOB_ID),
    "MODEL_NAME": "wine 'quality' $(rm -rf)",
    "MODEL_VERSION": "4",
    "EVENT": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "FROM_STAGE": "Staging",
    "TO_STAGE": "Production",
    "ALIAS": "",
    "DELIVERY_ID": DELIVERY,
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/",
    "SYSTEM_TEAMPROJECT": "MLOps",
    "BUILD_BUILDID": "42",
    "BUILD_BUILDNUMBER": "production-20261128.1",
    "DATABRICKS_POLL_SECONDS": "0.01",
}


def run(env: dict[str, str], databricks: DatabricksStandIn) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = main(env, workspace=databricks.workspace(), agent=Agent(lines.append))
    return code, lines


class TestStartingTheJob:
    def test_parameters_go_to_the_job_as_job_parameters(self, databricks: DatabricksStandIn, tmp_path: Path) -> None:
        state_file = tmp_path / "state.json"

        code, lines = run({**ENV, "RUN_STATE_FILE": str(state_file)}, databricks)

        assert code == 0
        (body,) = databricks.calls("POST", "/api/2.2/jobs/run-now")
        assert body["job_id"] == JOB_ID
        assert body["job_parameters"] == {
            "model_name": "wine 'quality' $(rm -rf)",
            "model_version": "4",
            "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
            "from_stage": "Staging",
            "to_stage": "Production",
            "alias": "",
            "delivery_id": DELIVERY,
            "pipeline_run": "https://dev.azure.com/contoso/MLOps/_build/results?buildId=42",
        }
        assert body["idempotency_token"] == f"{JOB_ID}-{DELIVERY}"
        (started,) = databricks.runs.values()
        assert f"Databricks job run {started.run_id}: {databricks.run_page_url(started)}" in lines
        state = run_state.load(state_file)
        assert state == run_state.RunState(
            JOB_ID,
            started.run_id,
            databricks.run_page_url(started),
            run_state.FINISHED,
            f"job run {started.run_id} TERMINATED/SUCCESS",
        )

    def test_the_run_is_named_and_tagged_for_the_environment_history(self, databricks: DatabricksStandIn) -> None:
        _, lines = run(ENV, databricks)

        assert "##vso[build.updatebuildnumber]wine 'quality' $(rm -rf) v4 production-20261128.1" in lines
        assert "##vso[build.addbuildtag]model:wine 'quality' $(rm -rf)" in lines
        assert "##vso[build.addbuildtag]version:4" in lines
        assert f"##vso[build.addbuildtag]delivery:{DELIVERY}" in lines

    def test_a_retried_pipeline_rejoins_the_same_run(self, databricks: DatabricksStandIn) -> None:
        assert run(ENV, databricks)[0] == 0
        assert run({**ENV, "BUILD_BUILDID": "43"}, databricks)[0] == 0

        assert len(databricks.calls("POST", "/api/2.2/jobs/run-now")) == 2
        assert len(databricks.runs) == 1

    def test_a_failed_job_fails_the_pipeline(self, databricks: DatabricksStandIn) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result="FAILED", message="validation failed")

        code, lines = run(ENV, databricks)

        assert code == 1
        (started,) = databricks.runs
        assert f"##vso[task.logissue type=error]job run {started} TERMINATED/FAILED: validation failed" in lines

    def test_waits_through_pending_and_running(self, databricks: DatabricksStandIn) -> None:
        databricks.run_plan = lambda job_id: RunPlan(pending_polls=2, running_polls=3)

        assert run(ENV, databricks)[0] == 0

        assert len(databricks.calls("GET", "/api/2.2/jobs/runs/get")) == 6

    def test_survives_throttling_and_a_brief_outage(self, databricks: DatabricksStandIn) -> None:
        answers = iter([(429, "0"), (503, None)])
        databricks.faults = lambda method, path: next(answers, None) if path.endswith("runs/get") else None

        assert run(ENV, databricks)[0] == 0


class TestTheRunNeverOutlivesTheStep:
    def test_the_state_file_exists_as_soon_as_the_run_does(self, databricks: DatabricksStandIn, tmp_path: Path) -> None:
        state_file = tmp_path / "state.json"
        databricks.faults = lambda method, path: (503, None) if path.endswith("runs/get") else None
        lines: list[str] = []

        code = main(
            {**ENV, "RUN_STATE_FILE": str(state_file)},
            workspace=databricks.workspace(retry_timeout_seconds=1),
            agent=Agent(lines.append),
        )

        assert code == 1
        assert lines[-1].startswith("##vso[task.logissue type=error]Databricks call failed: ")
        state = run_state.load(state_file)
        assert state is not None and state.run_id in databricks.runs and state.status == run_state.STARTED

    def test_its_own_timeout_cancels_the_run(self, databricks: DatabricksStandIn, tmp_path: Path) -> None:
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        ticks = iter(range(0, 10_000, 30))
        request = JobRunRequest(JOB_ID, {"model_name": "m"}, "101-x", timeout_seconds=60, poll_seconds=0)
        lines: list[str] = []

        code = run_step(
            databricks.workspace().jobs,
            request,
            Agent(lines.append),
            tmp_path / "s.json",
            clock=lambda: float(next(ticks)),
        )

        assert code == 1
        (started,) = databricks.runs.values()
        assert databricks.calls("POST", "/api/2.2/jobs/runs/cancel") == [{"run_id": started.run_id}]
        assert (
            f"##vso[task.logissue type=error]job run {started.run_id} still RUNNING after 60 s; the run was cancelled"
            in lines
        )
        state = run_state.load(tmp_path / "s.json")
        assert state is not None and (state.status, state.detail) == (
            run_state.TIMED_OUT,
            f"job run {started.run_id} still RUNNING after 60 s",
        )

    def test_sigterm_from_the_agent_cancels_the_run(self, databricks: DatabricksStandIn, tmp_path: Path) -> None:
        """The real step in its own process, stopped the way the agent stops a cancelled step."""
        databricks.run_plan = lambda job_id: RunPlan(result=None)
        state_file = tmp_path / "state.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))}
        env |= ENV | {
            "DATABRICKS_HOST": databricks.url,
            "DATABRICKS_AUTH_TYPE": "pat",
            "DATABRICKS_TOKEN": STANDIN_TOKEN,
            "REQUESTS_CA_BUNDLE": str(databricks.tls.ca_file),
            "RUN_STATE_FILE": str(state_file),
            "DATABRICKS_POLL_SECONDS": "0.05",
            "PYTHONPATH": str(ROOT),
        }
        step = subprocess.Popen(
            [sys.executable, "-m", "pipelines.run_databricks_job"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(databricks.calls("GET", "/api/2.2/jobs/runs/get")) < 2:
                assert step.poll() is None, step.communicate()[0]
                assert time.monotonic() < deadline, "the step never polled the run"
                time.sleep(0.05)
            step.send_signal(signal.SIGTERM)
            output, _ = step.communicate(timeout=60)
        finally:
            if step.poll() is None:
                step.kill()

        assert step.returncode == 1, output
        (started,) = databricks.runs.values()
        assert databricks.calls("POST", "/api/2.2/jobs/runs/cancel") == [{"run_id": started.run_id}]
        assert "the pipeline was cancelled or timed out; Databricks run" in output
        assert "Traceback" not in output
        state = run_state.load(state_file)
        assert state is not None and state.status == run_state.CANCELED


class TestLogsAreSafe:
    def test_a_model_name_cannot_smuggle_a_logging_command(self, databricks: DatabricksStandIn) -> None:
        name = "wine\n##vso[task.setvariable variable=DATABRICKS_HOST]https://evil.example"

        _, lines = run({**ENV, "MODEL_NAME": name}, databricks)

        assert all("\n" not in line for line in lines)
        assert [line for line in lines if "##vso[" in line and not line.startswith("##vso[")] == []
        assert not any(line.startswith("##vso[task.setvariable") for line in lines)
        # The job still gets the name exactly as the registry has it.
        assert databricks.calls("POST", "/api/2.2/jobs/run-now")[0]["job_parameters"]["model_name"] == name


class TestIdempotencyToken:
    def test_long_keys_are_hashed_deterministically_to_64_characters(self) -> None:
        key = "ab" * 40  # a Databricks-style sha256-derived delivery id is longer than fits
        token = idempotency_token(123, key)
        assert token is not None and len(token) == 64
        assert token == idempotency_token(123, key)

    def test_staging_and_production_jobs_get_different_tokens_for_one_delivery(self) -> None:
        assert idempotency_token(1, DELIVERY) != idempotency_token(2, DELIVERY)

    def test_manual_runs_fall_back_to_the_build_id(self) -> None:
        assert request_from_env({**ENV, "DELIVERY_ID": ""}).idempotency_token == f"{JOB_ID}-build-42"

    def test_unusual_characters_are_hashed(self) -> None:
        token = idempotency_token(1, "id with spaces/and:colons")
        assert token is not None and re.fullmatch(r"[0-9a-f]{64}", token)


class TestMisconfiguration:
    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"DATABRICKS_JOB_ID": ""}, "DATABRICKS_JOB_ID must be the numeric"),
            ({"MODEL_NAME": ""}, "MODEL_NAME is empty"),
            ({"JOB_TIMEOUT_MINUTES": "soon"}, "JOB_TIMEOUT_MINUTES must be a number"),
            ({"JOB_TIMEOUT_MINUTES": "0"}, "JOB_TIMEOUT_MINUTES must be positive"),
        ],
    )
    def test_is_reported_without_calling_databricks(self, override: dict[str, str], message: str) -> None:
        lines: list[str] = []
        assert main({**ENV, **override}, workspace=object(), agent=Agent(lines.append)) == 1
        assert lines == [f"##vso[task.logissue type=error]{message}" + lines[0].split(message, 1)[1]]


def test_state_files_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    state = run_state.RunState(1, 2, "u", run_state.CANCELED, "why")
    run_state.save(tmp_path / "s.json", state)
    assert run_state.load(tmp_path / "s.json") == state
    assert run_state.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.raises(ValueError, match="not a run state file"):
        run_state.load(tmp_path / "bad.json")

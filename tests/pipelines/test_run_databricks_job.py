"""pipelines/run_databricks_job.py against mocked Databricks Jobs REST (``responses``)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import responses

from pipelines.run_databricks_job import (
    JobRunRequest,
    StepError,
    idempotency_token,
    main,
    request_from_env,
    run_and_wait,
)
from standins.databricks import DATABRICKS_HOST as HOST
from standins.databricks import fake_workspace

DELIVERY = "1bfda340-c7cc-47c8-857a-e51a449e2e3d"
ENV = {
    "DATABRICKS_JOB_ID": "123",
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
}


class FakeJobsService:
    """Just enough of the Jobs API: run-now honours idempotency tokens, runs/get reports states."""

    def __init__(self, final_result: str = "SUCCESS", running_polls: int = 0) -> None:
        self.runs_by_token: dict[str, int] = {}
        self.run_now_bodies: list[dict[str, Any]] = []
        self.final_result, self.running_polls = final_result, running_polls
        responses.add_callback(responses.POST, f"{HOST}/api/2.2/jobs/run-now", callback=self.run_now)
        responses.add_callback(responses.GET, f"{HOST}/api/2.2/jobs/runs/get", callback=self.get_run)

    def run_now(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        self.run_now_bodies.append(body)
        token = body.get("idempotency_token") or f"no-token-{len(self.run_now_bodies)}"
        run_id = self.runs_by_token.setdefault(token, 1000 + len(self.runs_by_token))
        return 200, {}, json.dumps({"run_id": run_id, "number_in_job": run_id})

    def get_run(self, request: Any) -> tuple[int, dict[str, str], str]:
        run_id = int(request.params["run_id"])
        if self.running_polls > 0:
            self.running_polls -= 1
            state: dict[str, str] = {"life_cycle_state": "RUNNING"}
        else:
            state = {"life_cycle_state": "TERMINATED", "result_state": self.final_result,
                     "state_message": "" if self.final_result == "SUCCESS" else "validation failed"}  # fmt: skip
        page = f"{HOST}/#job/123/run/{run_id}"
        return 200, {}, json.dumps({"run_id": run_id, "run_page_url": page, "state": state})


class TestStartingTheJob:
    @responses.activate
    def test_parameters_go_to_the_job_as_job_parameters(self, capsys: pytest.CaptureFixture[str]) -> None:
        service = FakeJobsService()

        assert main(ENV, workspace=fake_workspace()) == 0

        (body,) = service.run_now_bodies
        assert body["job_id"] == 123
        assert body["job_parameters"] == {
            "model_name": "wine 'quality' $(rm -rf)", "model_version": "4",
            "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "from_stage": "Staging",
            "to_stage": "Production", "alias": "", "delivery_id": DELIVERY,
            "pipeline_run": "https://dev.azure.com/contoso/MLOps/_build/results?buildId=42",
        }  # fmt: skip
        assert body["idempotency_token"] == f"123-{DELIVERY}"
        assert f"{HOST}/#job/123/run/1000" in capsys.readouterr().out

    @responses.activate
    def test_a_retried_pipeline_rejoins_the_same_run(self) -> None:
        service = FakeJobsService()

        assert main(ENV, workspace=fake_workspace()) == 0
        assert main({**ENV, "BUILD_BUILDID": "43"}, workspace=fake_workspace()) == 0

        assert len(service.run_now_bodies) == 2
        assert list(service.runs_by_token.values()) == [1000]

    @responses.activate
    def test_a_failed_job_fails_the_pipeline(self, capsys: pytest.CaptureFixture[str]) -> None:
        FakeJobsService(final_result="FAILED")

        assert main(ENV, workspace=fake_workspace()) == 1
        assert "##vso[task.logissue type=error]job run 1000 TERMINATED/FAILED: validation failed" in (
            capsys.readouterr().out
        )

    @responses.activate
    def test_polls_until_the_run_ends(self) -> None:
        FakeJobsService(running_polls=2)
        sleeps: list[float] = []
        request = request_from_env(ENV)

        run = run_and_wait(fake_workspace().jobs, request, log=lambda line: None, sleep=sleeps.append)

        assert run.state.result_state.value == "SUCCESS"
        assert sleeps == [15.0, 15.0]

    @responses.activate
    def test_times_out_when_the_run_never_ends(self) -> None:
        FakeJobsService(running_polls=10_000)
        ticks = iter(range(0, 1_000_000, 30))
        request = JobRunRequest(123, {"model_name": "m"}, "123-x", timeout_seconds=60)

        with pytest.raises(StepError, match="still RUNNING after 60 s"):
            run_and_wait(fake_workspace().jobs, request, log=lambda line: None, sleep=lambda s: None,
                         clock=lambda: float(next(ticks)))  # fmt: skip


class TestIdempotencyToken:
    def test_long_keys_are_hashed_deterministically_to_64_characters(self) -> None:
        key = "ab" * 40  # a Databricks-style sha256-derived delivery id is longer than fits
        token = idempotency_token(123, key)
        assert token is not None and len(token) == 64
        assert token == idempotency_token(123, key)

    def test_staging_and_production_jobs_get_different_tokens_for_one_delivery(self) -> None:
        assert idempotency_token(1, DELIVERY) != idempotency_token(2, DELIVERY)

    def test_manual_runs_fall_back_to_the_build_id(self) -> None:
        assert request_from_env({**ENV, "DELIVERY_ID": ""}).idempotency_token == "123-build-42"

    def test_unusual_characters_are_hashed(self) -> None:
        token = idempotency_token(1, "id with spaces/and:colons")
        assert token is not None and re.fullmatch(r"[0-9a-f]{64}", token)


class TestMisconfiguration:
    @pytest.mark.parametrize(
        ("override", "message"),
        [({"DATABRICKS_JOB_ID": ""}, "DATABRICKS_JOB_ID must be the numeric"),
         ({"MODEL_NAME": ""}, "MODEL_NAME is empty"),
         ({"JOB_TIMEOUT_MINUTES": "soon"}, "JOB_TIMEOUT_MINUTES must be a number")],
    )  # fmt: skip
    def test_is_reported_without_calling_databricks(
        self, override: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main({**ENV, **override}, workspace=object()) == 1
        assert message in capsys.readouterr().out

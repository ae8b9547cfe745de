"""Pipeline step: start the Databricks job for one registry event, wait, fail if it fails.

Runs inside an ``AzureCLI@2`` step on a workload identity federation service connection, so
the Databricks SDK's ``azure-cli`` auth gets a short-lived Entra token from ``az``: there is
no Databricks token anywhere. Every input comes from environment variables that the YAML
sets in ``env:`` (never interpolated into a script), named in ``PARAMETER_ENV``.

The run is started with an idempotency token derived from the delivery id and the job id,
so a retried pipeline (or a re-queued run for the same delivery) gets the existing job run
back instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Job parameter name -> environment variable the YAML sets from the template parameter.
PARAMETER_ENV = {
    "model_name": "MODEL_NAME",
    "model_version": "MODEL_VERSION",
    "event": "EVENT",
    "from_stage": "FROM_STAGE",
    "to_stage": "TO_STAGE",
    "alias": "ALIAS",
    "delivery_id": "DELIVERY_ID",
}
JOB_ID_ENV = "DATABRICKS_JOB_ID"
TIMEOUT_ENV = "JOB_TIMEOUT_MINUTES"
MAX_IDEMPOTENCY_TOKEN = 64
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})


class StepError(Exception):
    """The step cannot start or finish the job; the message is safe to log."""


@dataclass(frozen=True)
class JobRunRequest:
    """What to send to ``jobs.run_now``; built from the environment by ``request_from_env``."""

    job_id: int
    job_parameters: dict[str, str]
    idempotency_token: str | None
    timeout_seconds: float


def idempotency_token(job_id: int, key: str) -> str | None:
    """A deterministic token of at most 64 characters for ``key`` on ``job_id``.

    The job id is part of it because one delivery may start both a staging and a production
    job; with the bare delivery id the second ``run_now`` would return the first job's run.
    """
    if not key:
        return None
    token = f"{job_id}-{key}"
    if len(token) <= MAX_IDEMPOTENCY_TOKEN and token.replace("-", "").replace("_", "").isalnum():
        return token
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def pipeline_run_url(env: Mapping[str, str]) -> str:
    """This Azure DevOps run's URL from the agent's predefined variables ("" outside a run)."""
    collection, project, build_id = (
        env.get("SYSTEM_COLLECTIONURI", ""), env.get("SYSTEM_TEAMPROJECT", ""), env.get("BUILD_BUILDID", "")
    )  # fmt: skip
    if not (collection and project and build_id):
        return ""
    return f"{collection.rstrip('/')}/{project}/_build/results?buildId={build_id}"


def request_from_env(env: Mapping[str, str]) -> JobRunRequest:
    """Build the run request from the step's environment.

    Raises:
        StepError: ``DATABRICKS_JOB_ID`` or ``MODEL_NAME`` is missing, or a number is malformed.
    """
    raw_job_id = env.get(JOB_ID_ENV, "").strip()
    if not raw_job_id.isdigit():
        raise StepError(f"{JOB_ID_ENV} must be the numeric Databricks job id, got {raw_job_id!r}")
    job_id = int(raw_job_id)
    parameters = {name: env.get(var, "").strip() for name, var in PARAMETER_ENV.items()}
    if not parameters["model_name"]:
        raise StepError(f"{PARAMETER_ENV['model_name']} is empty; queue the pipeline with model_name")
    parameters["pipeline_run"] = pipeline_run_url(env)
    # A manual run has no delivery id; the build id still makes "retry failed jobs" safe.
    key = parameters["delivery_id"] or (f"build-{env['BUILD_BUILDID']}" if env.get("BUILD_BUILDID") else "")
    try:
        timeout_minutes = float(env.get(TIMEOUT_ENV, "") or "60")
    except ValueError:
        raise StepError(f"{TIMEOUT_ENV} must be a number of minutes") from None
    return JobRunRequest(job_id, parameters, idempotency_token(job_id, key), timeout_minutes * 60)


def run_and_wait(
    jobs: Any,
    request: JobRunRequest,
    *,
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll_seconds: float = 15.0,
) -> Any:
    """Start (or rejoin) the run, log its URL, poll until it ends, and return the final run.

    Raises:
        StepError: the run did not end within the timeout.
    """
    waiter = jobs.run_now(
        job_id=request.job_id,
        job_parameters=request.job_parameters,
        idempotency_token=request.idempotency_token,
    )
    run_id = waiter.run_id
    deadline = clock() + request.timeout_seconds
    url_logged = False
    while True:
        run = jobs.get_run(run_id=run_id)
        if not url_logged and run.run_page_url:
            log(f"Databricks job run {run_id}: {run.run_page_url}")
            url_logged = True
        state = _life_cycle_state(run)
        if state in TERMINAL_STATES:
            return run
        if clock() >= deadline:
            raise StepError(f"job run {run_id} still {state} after {int(request.timeout_seconds)} s")
        sleep(poll_seconds)


def run_succeeded(run: Any) -> tuple[bool, str]:
    """Whether the finished run succeeded, and a one-line summary for the log."""
    state = run.state
    life_cycle = _life_cycle_state(run)
    result = state.result_state.value if state and state.result_state else "NONE"
    message = (state.state_message or "").replace("\n", " ") if state else ""
    summary = f"job run {run.run_id} {life_cycle}/{result}" + (f": {message}" if message else "")
    return life_cycle == "TERMINATED" and result == "SUCCESS", summary


def _life_cycle_state(run: Any) -> str:
    state = run.state
    return state.life_cycle_state.value if state and state.life_cycle_state else "PENDING"


def main(env: Mapping[str, str] | None = None, *, workspace: Any = None) -> int:
    """Entry point for ``python -m pipelines.run_databricks_job``; returns the exit code."""
    env = os.environ if env is None else env
    try:
        request = request_from_env(env)
        if workspace is None:
            from databricks.sdk import WorkspaceClient

            # Host from DATABRICKS_HOST; auth from the Azure CLI session AzureCLI@2 opened.
            workspace = WorkspaceClient(auth_type=env.get("DATABRICKS_AUTH_TYPE") or "azure-cli")
        print(f"Starting job {request.job_id} for {request.job_parameters['model_name']} "
              f"version {request.job_parameters['model_version'] or '-'} "
              f"(idempotency token {request.idempotency_token or 'none'})", flush=True)  # fmt: skip
        run = run_and_wait(workspace.jobs, request, log=lambda line: print(line, flush=True))
    except StepError as exc:
        print(f"##vso[task.logissue type=error]{exc}", flush=True)
        return 1
    ok, summary = run_succeeded(run)
    print(summary if ok else f"##vso[task.logissue type=error]{summary}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

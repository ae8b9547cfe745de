"""Pipeline step: start the Databricks job for one registry event, wait, cancel it if we are stopped.

Runs inside an ``AzureCLI@2`` step on a workload identity federation service connection, so
the Databricks SDK's ``azure-cli`` auth gets a short-lived Entra token from ``az`` (the task's
``keepAzSessionActive`` keeps that session alive for hours): there is no Databricks token
anywhere. Every input comes from environment variables that the YAML sets in ``env:`` (never
interpolated into a script), named in ``PARAMETER_ENV``.

The run is started with an idempotency token derived from the delivery id and the job id, so a
retried pipeline (or a re-queued run for the same delivery) gets the existing job run back
instead of starting a second one. The Databricks run never outlives its wait: when the wait
runs out, or the agent stops the step (SIGTERM/SIGINT on cancel or timeout), the run is
cancelled and ``RUN_STATE_FILE`` says so for the write-back step.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pipelines import run_state
from pipelines.agent import Agent, build_number, log_text

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
POLL_ENV = "DATABRICKS_POLL_SECONDS"
MAX_IDEMPOTENCY_TOKEN = 64
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})


class StepError(Exception):
    """The step cannot start or finish the job; the message is safe to log."""


class StepStopped(Exception):
    """The agent asked the step to stop (the pipeline was cancelled or timed out)."""


@dataclass(frozen=True)
class JobRunRequest:
    """What to send to ``jobs.run_now``; built from the environment by ``request_from_env``."""

    job_id: int
    job_parameters: dict[str, str]
    idempotency_token: str | None
    timeout_seconds: float
    poll_seconds: float = 15.0


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
    collection = env.get("SYSTEM_COLLECTIONURI", "")
    project = env.get("SYSTEM_TEAMPROJECT", "")
    build_id = env.get("BUILD_BUILDID", "")
    if not (collection and project and build_id):
        return ""
    return f"{collection.rstrip('/')}/{project}/_build/results?buildId={build_id}"


def _positive(env: Mapping[str, str], name: str, default: str) -> float:
    try:
        value = float(env.get(name, "") or default)
    except ValueError:
        raise StepError(f"{name} must be a number") from None
    if value <= 0:
        raise StepError(f"{name} must be positive")
    return value


def request_from_env(env: Mapping[str, str]) -> JobRunRequest:
    """Build the run request from the step's environment.

    Raises:
        StepError: ``DATABRICKS_JOB_ID`` or ``MODEL_NAME`` is missing, or a number is malformed.
    """
    raw_job_id = env.get(JOB_ID_ENV, "").strip()
    if not raw_job_id.isdigit():
        raise StepError(f"{JOB_ID_ENV} must be the numeric Databricks job id, got {log_text(raw_job_id)!r}")
    job_id = int(raw_job_id)
    parameters = {name: env.get(var, "").strip() for name, var in PARAMETER_ENV.items()}
    if not parameters["model_name"]:
        raise StepError(f"{PARAMETER_ENV['model_name']} is empty; queue the pipeline with model_name")
    parameters["pipeline_run"] = pipeline_run_url(env)
    # A manual run has no delivery id; the build id still makes "retry failed jobs" safe.
    key = parameters["delivery_id"] or (f"build-{env['BUILD_BUILDID']}" if env.get("BUILD_BUILDID") else "")
    timeout_seconds = _positive(env, TIMEOUT_ENV, "60") * 60
    poll_seconds = _positive(env, POLL_ENV, "15")
    return JobRunRequest(job_id, parameters, idempotency_token(job_id, key), timeout_seconds, poll_seconds)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT (how the agent stops a step) into ``StepStopped`` while waiting."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise StepStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def life_cycle_state(run: Any) -> str:
    state = run.state
    return state.life_cycle_state.value if state and state.life_cycle_state else "PENDING"


def start_run(jobs: Any, request: JobRunRequest) -> int:
    """Start (or, with the same idempotency token, rejoin) the job run and return its id."""
    waiter = jobs.run_now(
        job_id=request.job_id, job_parameters=request.job_parameters, idempotency_token=request.idempotency_token
    )
    return int(waiter.run_id)


def wait_for_run(
    jobs: Any,
    run_id: int,
    request: JobRunRequest,
    *,
    on_url: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Poll until the run ends and return it; ``on_url`` gets the run page URL once.

    Raises:
        StepError: the run did not end within the request's timeout.
    """
    deadline = clock() + request.timeout_seconds
    url_seen = False
    while True:
        run = jobs.get_run(run_id=run_id)
        if not url_seen and run.run_page_url:
            on_url(run.run_page_url)
            url_seen = True
        state = life_cycle_state(run)
        if state in TERMINAL_STATES:
            return run
        if clock() >= deadline:
            raise StepError(f"job run {run_id} still {state} after {int(request.timeout_seconds)} s")
        sleep(request.poll_seconds)


def run_succeeded(run: Any) -> tuple[bool, str]:
    """Whether the finished run succeeded, and a one-line summary for the log."""
    state = run.state
    life_cycle = life_cycle_state(run)
    result = state.result_state.value if state and state.result_state else "NONE"
    message = log_text(state.state_message or "") if state else ""
    summary = f"job run {run.run_id} {life_cycle}/{result}" + (f": {message}" if message else "")
    return life_cycle == "TERMINATED" and result == "SUCCESS", summary


def announce(agent: Agent, request: JobRunRequest, env: Mapping[str, str]) -> None:
    """Name the run after the model and version, and tag it with the correlation ids."""
    parameters = request.job_parameters
    name, version, delivery = parameters["model_name"], parameters["model_version"], parameters["delivery_id"]
    if env.get("BUILD_BUILDNUMBER"):
        agent.update_build_number(build_number(name, version, env["BUILD_BUILDNUMBER"]))
    for tag in (f"model:{name}", f"version:{version}" if version else "", f"delivery:{delivery}" if delivery else ""):
        if tag:
            agent.add_build_tag(tag)
    agent.line(
        f"Starting job {request.job_id} for {log_text(name)} version {log_text(version) or '-'} "
        f"(delivery_id={log_text(delivery) or '-'}, idempotency token {request.idempotency_token or 'none'})"
    )


def cancel(jobs: Any, agent: Agent, run_id: int, why: str) -> None:
    """Ask Databricks to cancel the run; the write-back step waits for it to end and records it."""
    try:
        jobs.cancel_run(run_id=run_id)
    except Exception as exc:  # the write-back step cancels again; this step must still say why it stopped
        agent.warning(f"could not cancel Databricks run {run_id} ({why}): {log_text(exc)}")
        return
    agent.line(f"Cancelled Databricks run {run_id}: {why}")


def run_step(jobs: Any, request: JobRunRequest, agent: Agent, state_file: Path | None, **wait: Any) -> int:
    """Start the run, wait for it, and cancel it when the wait ends early; return the exit code."""
    run_id = start_run(jobs, request)
    state = run_state.RunState(job_id=request.job_id, run_id=run_id)

    def record(new_state: run_state.RunState) -> None:
        if state_file is not None:
            run_state.save(state_file, new_state)

    record(state)

    def on_url(url: str) -> None:
        nonlocal state
        state = state.with_status(run_state.STARTED, run_page_url=url)
        record(state)
        agent.line(f"Databricks job run {run_id}: {log_text(url)}")

    try:
        with stop_on_signals():
            run = wait_for_run(jobs, run_id, request, on_url=on_url, **wait)
    except StepStopped as stopped:
        cancel(jobs, agent, run_id, f"the pipeline stopped this step ({stopped})")
        record(state.with_status(run_state.CANCELED, f"pipeline stopped the step ({stopped})"))
        agent.error(f"the pipeline was cancelled or timed out; Databricks run {run_id} was cancelled")
        return 1
    except StepError as exc:
        cancel(jobs, agent, run_id, str(exc))
        record(state.with_status(run_state.TIMED_OUT, str(exc)))
        agent.error(f"{exc}; the run was cancelled")
        return 1
    ok, summary = run_succeeded(run)
    record(state.with_status(run_state.FINISHED, summary, run_page_url=run.run_page_url or ""))
    (agent.line if ok else agent.error)(summary)
    return 0 if ok else 1


def main(env: Mapping[str, str] | None = None, *, workspace: Any = None, agent: Agent | None = None) -> int:
    """Entry point for ``python -m pipelines.run_databricks_job``; returns the exit code."""
    env = os.environ if env is None else env
    agent = agent or Agent()
    try:
        request = request_from_env(env)
        if workspace is None:
            from databricks.sdk import WorkspaceClient

            # Host from DATABRICKS_HOST; auth from the Azure CLI session AzureCLI@2 opened.
            workspace = WorkspaceClient(auth_type=env.get("DATABRICKS_AUTH_TYPE") or "azure-cli")
        announce(agent, request, env)
        state_file = Path(env[run_state.STATE_FILE_ENV]) if env.get(run_state.STATE_FILE_ENV) else None
        return run_step(workspace.jobs, request, agent, state_file)
    except StepError as exc:
        agent.error(str(exc))
        return 1
    except Exception as exc:  # the SDK's errors (auth, 4xx, 5xx after its retries): one line, no traceback
        agent.error(f"Databricks call failed: {type(exc).__name__}: {log_text(exc)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

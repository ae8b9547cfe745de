"""Pipeline step that always runs: make sure the Databricks run has ended, then write the result back.

It runs after success, failure, cancel and timeout alike (``condition: always()``). If the
Databricks run this pipeline run started is still going, it is cancelled and waited for, so a
cancelled deployment can never tag the version ``validated`` afterwards. Then the model version
gets the outcome where its owner looks (``result_tags``): the pipeline's status, the Azure DevOps
run URL, the Databricks run URL and the delivery id, and in the workspace registry a comment with
the same links. The delivery id is the correlation id from the relay's log line to the tags.

Tags describe one run: when the job itself recorded nothing for this run and the run succeeded
(an event superseded by a later change, or nothing to deploy), the version's tags are left alone.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from databricks_job.registry import RegistryClient, record_tags
from pipelines import run_state
from pipelines.agent import Agent, log_text
from pipelines.run_databricks_job import TERMINAL_STATES, life_cycle_state, pipeline_run_url

RESULT_ENV = "PIPELINE_RESULT"  # $(Agent.JobStatus): Succeeded, SucceededWithIssues, Failed, Canceled
REGISTRY_URI_ENV = "REGISTRY_URI"  # optional; by default the job's own `registry_uri` parameter
SETTLE_SECONDS = 300.0  # well inside the job's cancelTimeoutInMinutes
SUCCEEDED, FAILED, CANCELED, TIMED_OUT = "succeeded", "failed", "canceled", "timed_out"
# deployment.status when the job could not record an outcome itself.
_STATUS_WITHOUT_JOB_RECORD = {FAILED: "error", CANCELED: "canceled", TIMED_OUT: "timed_out"}


class CommentWriter(Protocol):
    def __call__(self, name: str, version: str, text: str) -> None: ...


@dataclass(frozen=True)
class Deployment:
    """What this pipeline run was deploying, from the step's environment."""

    model_name: str
    model_version: str
    delivery_id: str
    stage_label: str
    pipeline_run: str
    pipeline_result: str


@dataclass(frozen=True)
class Outcome:
    """How the Databricks run ended, in the pipeline's words."""

    status: str
    message: str
    run_id: int
    run_page_url: str


def deployment_from_env(env: Mapping[str, str]) -> Deployment:
    return Deployment(
        model_name=env.get("MODEL_NAME", "").strip(),
        model_version=env.get("MODEL_VERSION", "").strip(),
        delivery_id=env.get("DELIVERY_ID", "").strip(),
        stage_label=env.get("DEPLOY_ENVIRONMENT", "").strip(),
        pipeline_run=pipeline_run_url(env),
        pipeline_result=env.get(RESULT_ENV, "").strip() or "Unknown",
    )


def settle(
    jobs: Any,
    state: run_state.RunState,
    deployment: Deployment,
    agent: Agent,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = SETTLE_SECONDS,
    poll: float = 5.0,
) -> Outcome:
    """End the run if it is still going, wait for it to stop, and say how it ended."""
    run = jobs.get_run(run_id=state.run_id)
    cancelled_because = ""
    if life_cycle_state(run) not in TERMINAL_STATES:
        cancelled_because = (
            f"the pipeline ended {log_text(deployment.pipeline_result)} while the run was {life_cycle_state(run)}"
        )
        agent.line(f"Cancelling Databricks run {state.run_id}: {cancelled_because}")
        jobs.cancel_run(run_id=state.run_id)
        deadline = clock() + timeout
        while life_cycle_state(run) not in TERMINAL_STATES and clock() < deadline:
            sleep(poll)
            run = jobs.get_run(run_id=state.run_id)
    url = run.run_page_url or state.run_page_url
    lifecycle = life_cycle_state(run)
    if lifecycle not in TERMINAL_STATES:
        return Outcome(
            CANCELED, f"cancel requested; the run was still {lifecycle} after {int(timeout)} s", run.run_id, url
        )
    result = run.state.result_state.value if run.state and run.state.result_state else "NONE"
    message = (run.state.state_message or "") if run.state else ""
    if result == "CANCELED":
        status = TIMED_OUT if state.status == run_state.TIMED_OUT else CANCELED
        message = state.detail or cancelled_because or message
    else:
        status = SUCCEEDED if (lifecycle, result) == ("TERMINATED", "SUCCESS") else FAILED
        message = message or f"{lifecycle}/{result}"
    return Outcome(status, message, run.run_id, url)


def result_tags(deployment: Deployment, outcome: Outcome, *, recorded_by_job: bool, now: datetime) -> dict[str, str]:
    """The tags this step sets on the version (empty: leave the version's tags alone)."""
    if outcome.status == SUCCEEDED and not recorded_by_job:
        return {}
    tags = {
        "deployment.pipeline_status": outcome.status,
        "deployment.pipeline_run": deployment.pipeline_run,
        "deployment.job_run": str(outcome.run_id),
        "deployment.job_run_url": outcome.run_page_url,
        "deployment.delivery_id": deployment.delivery_id,
        "deployment.finished_at": now.isoformat(timespec="seconds"),
    }
    if not recorded_by_job:
        tags["deployment.status"] = _STATUS_WITHOUT_JOB_RECORD[outcome.status]
        tags["deployment.message"] = outcome.message
    return tags


def comment_text(deployment: Deployment, outcome: Outcome) -> str:
    where = f" to {deployment.stage_label}" if deployment.stage_label else ""
    lines = [
        f"Deployment{where}: {outcome.status} ({outcome.message})",
        f"Azure DevOps run: {deployment.pipeline_run or '-'}",
        f"Databricks run: {outcome.run_page_url or outcome.run_id}",
        f"Delivery id: {deployment.delivery_id or '-'}",
    ]
    return "\n".join(lines)


def write_back(
    registry: RegistryClient,
    comments: CommentWriter | None,
    deployment: Deployment,
    outcome: Outcome,
    agent: Agent,
    *,
    now: datetime,
) -> None:
    """Set the result tags (and post the comment) on the version; one log line says what was written."""
    name, version = deployment.model_name, deployment.model_version
    current = dict(registry.get_model_version(name, version).tags or {})
    recorded = current.get("deployment.job_run") == str(outcome.run_id)
    tags = result_tags(deployment, outcome, recorded_by_job=recorded, now=now)
    record_tags(registry, name, version, tags)
    if comments is not None:
        comments(name, version, comment_text(deployment, outcome))
    agent.line(
        f"write-back delivery_id={log_text(deployment.delivery_id) or '-'} model={log_text(name)} version={version} "
        f"pipeline_status={outcome.status} databricks_run={outcome.run_id} tags={len(tags)} "
        f"comment={'yes' if comments else 'no'}"
        + ("" if tags else " (the job recorded no outcome for this run: the version's tags are left as they are)")
    )


def registry_uri_for(jobs: Any, job_id: int, env: Mapping[str, str]) -> str:
    """``REGISTRY_URI``, else the job's own ``registry_uri`` parameter default, else ``databricks``."""
    if env.get(REGISTRY_URI_ENV):
        return env[REGISTRY_URI_ENV]
    settings = jobs.get(job_id=job_id).settings
    for parameter in (settings.parameters or []) if settings else []:
        if parameter.name == "registry_uri" and parameter.default:
            return str(parameter.default)
    return "databricks"


def comments_for(registry_uri: str, workspace: Any) -> CommentWriter | None:
    """Comments exist in the workspace registry only (not Unity Catalog, not open-source MLflow)."""
    if registry_uri != "databricks":
        return None

    def post(name: str, version: str, text: str) -> None:
        workspace.model_registry.create_comment(name=name, version=version, comment=text)

    return post


def _mlflow_client(registry_uri: str) -> RegistryClient:
    from mlflow import MlflowClient

    tracking = "databricks" if registry_uri.startswith("databricks") else registry_uri
    client: RegistryClient = MlflowClient(tracking_uri=tracking, registry_uri=registry_uri)
    return client


def main(
    env: Mapping[str, str] | None = None,
    *,
    workspace: Any = None,
    registry: RegistryClient | None = None,
    agent: Agent | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    **settle_options: Any,
) -> int:
    """Entry point for ``python -m pipelines.finish_deployment``; 1 when the write-back failed."""
    env = os.environ if env is None else env
    agent = agent or Agent()
    deployment = deployment_from_env(env)
    try:
        state = run_state.load(Path(env.get(run_state.STATE_FILE_ENV) or "databricks-run.json"))
    except ValueError as exc:
        agent.error(str(exc))
        return 1
    if state is None:
        agent.line(
            f"No Databricks run was started (pipeline {log_text(deployment.pipeline_result)}): nothing to "
            "cancel, and the version's tags are left as they are"
        )
        return 0
    try:
        if workspace is None:
            from databricks.sdk import WorkspaceClient

            workspace = WorkspaceClient(auth_type=env.get("DATABRICKS_AUTH_TYPE") or "azure-cli")
        outcome = settle(workspace.jobs, state, deployment, agent, **settle_options)
        agent.line(f"Databricks run {outcome.run_id} ended {outcome.status}: {log_text(outcome.message)}")
        if not (deployment.model_name and deployment.model_version):
            agent.line("The event names no model version: nothing to write back")
            return 0
        uri = registry_uri_for(workspace.jobs, state.job_id, env)
        write_back(registry or _mlflow_client(uri), comments_for(uri, workspace), deployment, outcome, agent, now=now())
    except Exception as exc:  # SDK and MLflow errors: one line on the run, no traceback; the step fails
        agent.error(f"write-back failed: {type(exc).__name__}: {log_text(exc)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

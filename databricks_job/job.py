"""The job's flow: wait for READY, drop superseded events, validate, record the outcome.

Each step is a small function elsewhere; this module only orders them and turns their
errors into an outcome, tags and an audit row. Tag keys (``deployment.*``, ``validation.*``)
are set on the model version so the registry UI shows what happened to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from databricks_job import registry
from databricks_job.audit import AuditRecord, AuditSink
from databricks_job.decisions import superseded_reason
from databricks_job.errors import JobError, ModelVersionNotReady, ValidationFailed
from databricks_job.params import JobParameters
from databricks_job.registry import RegistryClient
from databricks_job.validation import CheckContext, ModelLoader, load_pyfunc, validate_model

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    """What happened: ``outcome`` is one of the ``OUTCOME_*`` values below."""

    outcome: str
    message: str
    exit_code: int
    tags: dict[str, str] = field(default_factory=dict)


OUTCOME_VALIDATED = "validated"
OUTCOME_VALIDATION_FAILED = "validation_failed"
OUTCOME_NOT_READY = "not_ready"
OUTCOME_SUPERSEDED = "superseded"
OUTCOME_NOTHING_TO_DO = "nothing_to_do"
OUTCOME_ERROR = "error"


@dataclass
class JobRuntime:
    """The job's collaborators, replaceable in tests."""

    client: RegistryClient
    sink: AuditSink
    loader: ModelLoader = load_pyfunc
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def run_job(params: JobParameters, runtime: JobRuntime) -> JobOutcome:
    """Run the whole flow for one event and record it (audit always, then tags where a version applies).

    The audit row comes first: if it cannot be written the job fails before any tag claims an
    outcome, and the pipeline's write-back records the failure on the version instead.

    Raises:
        AuditFailed: the audit row could not be written (no tags were set).
    """
    outcome = _decide(params, runtime)
    runtime.sink.append(_audit_record(params, outcome, runtime.now()))
    if outcome.tags:
        registry.record_tags(runtime.client, params.model_name, params.model_version, outcome.tags)
    log = _log.info if outcome.exit_code == 0 else _log.error
    log("%s: %s", outcome.outcome, outcome.message)
    return outcome


def _decide(params: JobParameters, runtime: JobRuntime) -> JobOutcome:
    if params.is_deletion:
        return JobOutcome(OUTCOME_NOTHING_TO_DO, f"{params.event} names no version to deploy", 0)
    name, version = params.model_name, params.model_version
    base = _run_tags(params, runtime.now())
    try:
        model_version = registry.wait_until_ready(
            runtime.client,
            name,
            version,
            timeout=params.ready_timeout_seconds,
            poll=params.poll_seconds,
            sleep=runtime.sleep,
            clock=runtime.clock,
        )
    except ModelVersionNotReady as exc:
        return _failed(OUTCOME_NOT_READY, exc, base)
    reason = superseded_reason(
        version=version,
        expected_stage=params.expected_stage,
        current_stage=getattr(model_version, "current_stage", None),
        alias=params.alias,
        alias_version=registry.alias_version(runtime.client, name, params.alias) if params.alias else None,
    )
    if reason:
        # No tags: the version's tags describe its latest real deployment, which this was not.
        return JobOutcome(OUTCOME_SUPERSEDED, reason, 0)
    context = CheckContext(
        model_name=name,
        model_version=version,
        model_uri=f"models:/{name}/{version}",
        event=params.event,
        stage=params.expected_stage,
        alias=params.alias,
    )
    try:
        passed = validate_model(context, checks=params.checks, loader=runtime.loader)
    except ValidationFailed as exc:
        tags = {**base, "validation.status": "failed", "validation.message": str(exc)}
        return _failed(OUTCOME_VALIDATION_FAILED, exc, tags)
    except JobError as exc:
        tags = {**base, "validation.status": "error", "validation.message": str(exc)}
        return _failed(OUTCOME_ERROR, exc, tags)
    tags = {**base, "validation.status": "passed", "validation.checks": ",".join(passed)}
    tags["deployment.status"] = OUTCOME_VALIDATED
    return JobOutcome(OUTCOME_VALIDATED, f"{name} version {version} passed: {', '.join(passed)}", 0, tags)


def _failed(outcome: str, exc: JobError, tags: dict[str, str]) -> JobOutcome:
    return JobOutcome(outcome, str(exc), exc.exit_code, {**tags, "deployment.status": outcome})


def _run_tags(params: JobParameters, now: datetime) -> dict[str, str]:
    return {
        "deployment.pipeline_run": params.pipeline_run,
        "deployment.job_run": params.job_run,
        "deployment.delivery_id": params.delivery_id,
        "deployment.event": params.event,
        "deployment.stage": params.expected_stage,
        "deployment.alias": params.alias,
        "deployment.updated_at": now.isoformat(timespec="seconds"),
    }


def _audit_record(params: JobParameters, outcome: JobOutcome, now: datetime) -> AuditRecord:
    return AuditRecord(
        recorded_at=now.isoformat(timespec="seconds"),
        model_name=params.model_name,
        model_version=params.model_version,
        event=params.event,
        delivery_id=params.delivery_id,
        pipeline_run=params.pipeline_run,
        job_run=params.job_run,
        outcome=outcome.outcome,
        message=outcome.message,
    )

"""The job's parameters: the relay's template parameters plus job-level settings.

On Databricks they arrive as task arguments built from job parameters
(``--model-name={{job.parameters.model_name}}``, see ``job.json``); locally, as ordinary
command-line flags. Empty strings mean "not applicable", exactly as the relay sends them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from databricks_job.errors import ParameterError

# Databricks event names carry the target stage; the relay may also send it as to_stage.
_TRANSITION_PREFIX = "MODEL_VERSION_TRANSITIONED_TO_"


@dataclass(frozen=True)
class JobParameters:
    """Everything one job run needs to know; built by ``parse_job_args``."""

    model_name: str
    model_version: str
    event: str = ""
    from_stage: str = ""
    to_stage: str = ""
    alias: str = ""
    delivery_id: str = ""
    pipeline_run: str = ""
    job_run: str = ""
    registry_uri: str = ""
    checks: tuple[str, ...] = ()
    audit_table: str = ""
    audit_warehouse_id: str = ""
    audit_path: str = ""
    ready_timeout_seconds: float = 600.0
    poll_seconds: float = 5.0

    @property
    def expected_stage(self) -> str:
        """The stage the event says the version entered ("" when the event names none)."""
        if self.to_stage:
            return self.to_stage
        if self.event.upper().startswith(_TRANSITION_PREFIX):
            return self.event[len(_TRANSITION_PREFIX) :].capitalize()
        return ""

    @property
    def is_deletion(self) -> bool:
        """An alias/tag deletion: there is no version to deploy."""
        return self.event.endswith(".deleted")


def build_arg_parser() -> argparse.ArgumentParser:
    """The job's command line; every relay parameter is an optional string defaulting to ""."""
    parser = argparse.ArgumentParser(
        prog="relay-databricks-job",
        description="Validate a model version named by a registry event and record the outcome.",
    )
    for name in ("model-name", "model-version", "event", "from-stage", "to-stage", "alias", "delivery-id"):
        parser.add_argument(f"--{name}", default="")
    parser.add_argument("--pipeline-run", default="", help="Azure DevOps run URL, stored as a tag")
    parser.add_argument("--job-run", default="", help="Databricks job run id ({{job.run_id}})")
    parser.add_argument("--registry-uri", default="", help="e.g. databricks, databricks-uc, sqlite:///...")
    parser.add_argument(
        "--checks",
        default="",
        help="comma-separated 'package.module:function' validation hooks (see docs/databricks.md)",
    )
    parser.add_argument("--audit-table", default="", help="Unity Catalog table for audit rows, e.g. main.mlops.audit")
    parser.add_argument("--audit-warehouse-id", default="", help="SQL warehouse that writes --audit-table")
    parser.add_argument("--audit-path", default="", help="JSON Lines file for audit rows (local runs)")
    parser.add_argument("--ready-timeout-seconds", default="600")
    parser.add_argument("--poll-seconds", default="5")
    return parser


def parse_job_args(argv: Sequence[str]) -> JobParameters:
    """Parse and check the job's arguments.

    Raises:
        ParameterError: the model name is missing, or a version is missing for an event that
            names one, or a number is malformed, or an audit table has no SQL warehouse.
    """
    ns = build_arg_parser().parse_args(list(argv))
    params = JobParameters(
        model_name=ns.model_name.strip(),
        model_version=ns.model_version.strip(),
        event=ns.event.strip(),
        from_stage=ns.from_stage.strip(),
        to_stage=ns.to_stage.strip(),
        alias=ns.alias.strip(),
        delivery_id=ns.delivery_id.strip(),
        pipeline_run=ns.pipeline_run.strip(),
        job_run=ns.job_run.strip(),
        registry_uri=ns.registry_uri.strip(),
        checks=tuple(c.strip() for c in ns.checks.split(",") if c.strip()),
        audit_table=ns.audit_table.strip(),
        audit_warehouse_id=ns.audit_warehouse_id.strip(),
        audit_path=ns.audit_path.strip(),
        ready_timeout_seconds=_positive_number("ready-timeout-seconds", ns.ready_timeout_seconds),
        poll_seconds=_positive_number("poll-seconds", ns.poll_seconds),
    )
    if not params.model_name:
        raise ParameterError("--model-name is required")
    if not params.model_version and not params.is_deletion:
        raise ParameterError(f"--model-version is required for event {params.event or '(none)'!r}")
    if params.audit_table and not params.audit_warehouse_id:
        raise ParameterError(
            f"--audit-table {params.audit_table} needs --audit-warehouse-id (the SQL warehouse that writes it)"
        )
    if params.model_version and not params.model_version.isdigit():
        raise ParameterError(f"--model-version must be a number, got {params.model_version!r}")
    return params


def _positive_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ParameterError(f"--{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ParameterError(f"--{name} must be positive, got {raw!r}")
    return value

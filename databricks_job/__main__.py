"""``python -m databricks_job`` / ``relay-databricks-job``: the job a pipeline run starts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from databricks_job.audit import choose_sink
from databricks_job.errors import JobError
from databricks_job.job import JobRuntime, run_job
from databricks_job.params import parse_job_args


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the job against the configured registry, return the exit code.

    0: validated, superseded or nothing to do; 1: not ready or validation failed;
    2: bad parameters; 3: the audit row could not be written.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = parse_job_args(sys.argv[1:] if argv is None else argv)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from mlflow import MlflowClient

    client = MlflowClient(registry_uri=params.registry_uri or None)
    sink = choose_sink(
        table=params.audit_table,
        warehouse_id=params.audit_warehouse_id,
        path=params.audit_path,
        statements=_statement_execution,
    )
    try:
        outcome = run_job(params, JobRuntime(client=client, sink=sink))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{outcome.outcome}: {outcome.message}")
    return outcome.exit_code


def _statement_execution() -> object:
    """The SQL Statement Execution API with the job's own identity (Databricks default auth)."""
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient().statement_execution


if __name__ == "__main__":
    sys.exit(main())

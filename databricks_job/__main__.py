"""``python -m databricks_job`` / ``relay-databricks-job``: the job a pipeline run starts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from databricks_job.audit import active_spark_session, choose_sink
from databricks_job.errors import JobError
from databricks_job.job import JobRuntime, run_job
from databricks_job.params import parse_job_args


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the job against the configured registry, return the exit code.

    0: validated, superseded or nothing to do; 1: not ready or validation failed;
    2: bad parameters.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = parse_job_args(sys.argv[1:] if argv is None else argv)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from mlflow import MlflowClient

    client = MlflowClient(registry_uri=params.registry_uri or None)
    sink = choose_sink(table=params.audit_table, path=params.audit_path, spark=active_spark_session())
    outcome = run_job(params, JobRuntime(client=client, sink=sink))
    print(f"{outcome.outcome}: {outcome.message}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())

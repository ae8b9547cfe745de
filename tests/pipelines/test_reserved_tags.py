"""Every tag the deployment writes is one the relay's routing refuses to act on (no retrigger loop)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from databricks_job.job import _run_tags
from databricks_job.params import parse_job_args
from pipelines.finish_deployment import Deployment, Outcome, result_tags
from webhook.rules import is_reserved_tag

NOW = datetime(2026, 11, 28, tzinfo=UTC)


@pytest.mark.parametrize("status", ["failed", "canceled", "timed_out"])
@pytest.mark.parametrize("recorded_by_job", [True, False])
def test_the_write_back_tags_are_reserved(status: str, recorded_by_job: bool) -> None:
    deployment = Deployment("m", "1", "d", "production", "https://dev.azure.com/x", "Canceled")
    tags = result_tags(deployment, Outcome(status, "why", 1, "u"), recorded_by_job=recorded_by_job, now=NOW)
    assert tags and all(is_reserved_tag(key) for key in tags)


def test_the_jobs_own_tags_are_reserved() -> None:
    keys = [*_run_tags(parse_job_args(["--model-name=m", "--model-version=1"]), NOW)]
    keys += ["validation.status", "validation.checks", "validation.message", "deployment.status"]
    assert all(is_reserved_tag(key) for key in keys)

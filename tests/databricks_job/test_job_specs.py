"""The Databricks job specs in databricks_job/ agree with the code that fills and reads them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from databricks_job.errors import ParameterError
from databricks_job.params import parse_job_args
from pipelines.run_databricks_job import PARAMETER_ENV

SPECS = Path(__file__).resolve().parents[2] / "databricks_job"


def _spec(name: str) -> dict[str, Any]:
    document = json.loads((SPECS / name).read_text())
    assert isinstance(document, dict)
    return document


def _resolved_arguments(spec: dict[str, Any], values: dict[str, str]) -> list[str]:
    """The task's arguments as Databricks would pass them, dynamic references replaced."""
    (task,) = spec["tasks"]
    arguments: list[str] = task["python_wheel_task"]["parameters"]
    return [
        re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: values[m.group(1)], a).replace("{{job.run_id}}", "881")
        for a in arguments
    ]


def test_validation_job_accepts_every_parameter_the_pipeline_sends() -> None:
    spec = _spec("job.json")
    declared = {p["name"]: p["default"] for p in spec["parameters"]}
    assert {*PARAMETER_ENV, "pipeline_run"} <= declared.keys()
    values = {**declared, "model_name": "wine", "model_version": "7", "alias": "champion", "audit_warehouse_id": "wh"}

    params = parse_job_args(_resolved_arguments(spec, values))

    assert (params.model_name, params.model_version, params.alias, params.job_run) == ("wine", "7", "champion", "881")
    assert (params.audit_table, params.audit_warehouse_id) == (declared["audit_table"], "wh")


def test_the_shipped_job_refuses_to_run_until_its_audit_warehouse_is_set() -> None:
    spec = _spec("job.json")
    values = {p["name"]: p["default"] for p in spec["parameters"]} | {"model_name": "wine", "model_version": "7"}

    with pytest.raises(ParameterError, match="needs --audit-warehouse-id"):
        parse_job_args(_resolved_arguments(spec, values))

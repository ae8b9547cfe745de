"""Pure parts of the job: parameters, the supersession rule, audit sink choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from databricks_job.audit import JsonLinesAuditSink, LogOnlyAuditSink, SqlStatementAuditSink, choose_sink
from databricks_job.decisions import superseded_reason
from databricks_job.errors import ParameterError
from databricks_job.params import parse_job_args
from databricks_job.validation import resolve_check


class TestParameters:
    def test_stage_is_derived_from_a_databricks_event_name(self) -> None:
        params = parse_job_args(
            ["--model-name=m", "--model-version=3", "--event=MODEL_VERSION_TRANSITIONED_TO_STAGING"]
        )
        assert params.expected_stage == "Staging"

    def test_explicit_to_stage_wins(self) -> None:
        params = parse_job_args(["--model-name=m", "--model-version=3", "--event=X", "--to-stage=Production"])
        assert params.expected_stage == "Production"

    @pytest.mark.parametrize(
        "argv",
        [
            ["--model-version=1"],
            ["--model-name=m"],
            ["--model-name=m", "--model-version=v1"],
            ["--model-name=m", "--model-version=1", "--poll-seconds=0"],
        ],
    )
    def test_bad_parameters_are_refused(self, argv: list[str]) -> None:
        with pytest.raises(ParameterError):
            parse_job_args(argv)

    def test_checks_are_split_on_commas(self) -> None:
        params = parse_job_args(["--model-name=m", "--model-version=1", "--checks= a.b:c , d:e ,"])
        assert params.checks == ("a.b:c", "d:e")


class TestSupersession:
    def test_current_event_is_not_superseded(self) -> None:
        assert (
            superseded_reason(
                version="3",
                expected_stage="Production",
                current_stage="production",
                alias="champion",
                alias_version="3",
            )
            is None
        )

    def test_stage_change_supersedes(self) -> None:
        reason = superseded_reason(
            version="3", expected_stage="Staging", current_stage="Production", alias="", alias_version=None
        )
        assert reason is not None and "no longer in Staging (now Production)" in reason

    def test_unity_catalog_version_has_no_stage(self) -> None:
        reason = superseded_reason(
            version="3", expected_stage="Staging", current_stage=None, alias="", alias_version=None
        )
        assert reason is not None and "now None" in reason

    def test_events_naming_neither_stage_nor_alias_always_hold(self) -> None:
        assert (
            superseded_reason(version="3", expected_stage="", current_stage="Archived", alias="", alias_version=None)
            is None
        )


class TestChecks:
    def test_malformed_spec(self) -> None:
        with pytest.raises(ParameterError, match=r"package\.module:function"):
            resolve_check("just_a_module")

    def test_non_callable_target(self) -> None:
        with pytest.raises(ParameterError, match="not callable"):
            resolve_check("os:sep")


class TestAuditSinkChoice:
    """The sink is what the parameters ask for; a table never quietly becomes something else."""

    def test_a_table_is_written_through_the_sql_warehouse(self) -> None:
        made: list[str] = []
        sink = choose_sink(
            table="main.mlops.audit",
            warehouse_id="wh-1",
            path="/tmp/a.jsonl",
            statements=lambda: made.append("statements") or object(),
        )
        assert isinstance(sink, SqlStatementAuditSink)
        assert made == ["statements"]

    def test_a_file_is_used_only_when_no_table_is_named(self, tmp_path: Path) -> None:
        sink = choose_sink(table="", warehouse_id="", path=str(tmp_path / "a.jsonl"), statements=_no_statements)
        assert isinstance(sink, JsonLinesAuditSink)

    def test_without_table_or_path_the_log_is_used_and_no_client_is_built(self) -> None:
        assert isinstance(choose_sink(table="", warehouse_id="", path="", statements=_no_statements), LogOnlyAuditSink)

    def test_a_table_without_a_warehouse_is_refused_before_anything_runs(self) -> None:
        with pytest.raises(ParameterError, match=r"--audit-table main\.mlops\.audit needs --audit-warehouse-id"):
            parse_job_args(["--model-name=m", "--model-version=1", "--audit-table=main.mlops.audit"])


def _no_statements() -> object:
    raise AssertionError("no SQL client may be built without an audit table")

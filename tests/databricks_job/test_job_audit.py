"""The audit row goes to a table through the SQL Statement Execution API, or the job fails loudly.

Databricks is the loopback stand-in (TLS); the registry is a real local MLflow registry.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from databricks_job.__main__ import main
from databricks_job.audit import COLUMNS, CREATE_TABLE, INSERT_ROW, AuditRecord, SqlStatementAuditSink
from databricks_job.errors import AuditFailed
from standins.databricks import STANDIN_TOKEN, DatabricksStandIn

TABLE = "main.mlops.deployment_audit"
RECORD = AuditRecord(
    "2026-11-28T15:30:00+00:00",
    "wine'); DROP TABLE x; --",
    "3",
    "model_version_alias.created",
    "d-1",
    "https://dev.azure.com/contoso/MLOps/_build/results?buildId=42",
    "881",
    "validated",
    "ok",
)


def sink(databricks: DatabricksStandIn, **options: Any) -> SqlStatementAuditSink:
    return SqlStatementAuditSink(
        databricks.workspace().statement_execution, warehouse_id="wh-1", table=TABLE, sleep=lambda s: None, **options
    )


class TestSqlStatementSink:
    def test_the_statements_name_every_column_of_the_record(self) -> None:
        for statement in (CREATE_TABLE, INSERT_ROW):
            assert re.findall(r"\b(" + "|".join(COLUMNS) + r")\b", statement.split("VALUES")[0]) == list(COLUMNS)
        assert re.findall(r":(\w+)", INSERT_ROW) == ["table", *COLUMNS]

    def test_creates_the_table_once_and_appends_each_row(self, databricks: DatabricksStandIn) -> None:
        audit = sink(databricks)

        audit.append(RECORD)
        audit.append(RECORD)

        assert databricks.tables[TABLE] == [dict(zip(COLUMNS, (getattr(RECORD, c) for c in COLUMNS), strict=True))] * 2
        statements = [b["statement"] for b in databricks.calls("POST", "/api/2.0/sql/statements")]
        assert [s.split(" IDENTIFIER")[0] for s in statements] == [
            "CREATE TABLE IF NOT EXISTS",
            "INSERT INTO",
            "INSERT INTO",
        ]

    def test_every_value_is_a_statement_parameter_never_sql_text(self, databricks: DatabricksStandIn) -> None:
        sink(databricks).append(RECORD)

        for body in databricks.calls("POST", "/api/2.0/sql/statements"):
            assert "wine'" not in body["statement"] and TABLE not in body["statement"]
            assert body["warehouse_id"] == "wh-1"
            assert {"name": "table", "value": TABLE, "type": "STRING"} in body["parameters"]

    def test_waits_for_a_statement_the_warehouse_is_still_running(self, databricks: DatabricksStandIn) -> None:
        databricks.statement_plan = lambda sql: (3, None)

        sink(databricks).append(RECORD)

        assert len(databricks.tables[TABLE]) == 1
        assert len([p for m, p, _ in databricks.requests if m == "GET" and "/sql/statements/" in p]) == 6

    def test_a_failed_statement_fails_with_the_warehouse_error(self, databricks: DatabricksStandIn) -> None:
        refusal = (
            "BAD_REQUEST: [INSUFFICIENT_PERMISSIONS] User does not have MODIFY on Table 'main.mlops.deployment_audit'."
        )
        databricks.statement_plan = lambda sql: (0, refusal if sql.startswith("INSERT") else None)

        with pytest.raises(
            AuditFailed,
            match=r"audit table main\.mlops\.deployment_audit on SQL warehouse wh-1: "
            r"statement FAILED: BAD_REQUEST: \[INSUFFICIENT_PERMISSIONS\] User does not have MODIFY",
        ):
            sink(databricks).append(RECORD)

    def test_an_unknown_warehouse_fails(self, databricks: DatabricksStandIn) -> None:
        databricks.warehouses = set()

        with pytest.raises(
            AuditFailed, match=r"SQL warehouse wh-1: ResourceDoesNotExist: SQL warehouse wh-1 does not exist"
        ):
            sink(databricks).append(RECORD)

    def test_a_statement_that_never_finishes_fails_after_the_timeout(self, databricks: DatabricksStandIn) -> None:
        databricks.statement_plan = lambda sql: (10_000, None)
        ticks = iter(range(0, 10_000, 60))

        with pytest.raises(AuditFailed, match="statement PENDING: still PENDING after 300 s"):
            sink(databricks, clock=lambda: float(next(ticks))).append(RECORD)


class TestTheJobEndToEnd:
    """``python -m databricks_job`` as the wheel task runs it, with the job's default auth from the environment."""

    @pytest.fixture(autouse=True)
    def databricks_env(self, databricks: DatabricksStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABRICKS_HOST", databricks.url)
        monkeypatch.setenv("DATABRICKS_AUTH_TYPE", "pat")
        monkeypatch.setenv("DATABRICKS_TOKEN", STANDIN_TOKEN)

    def argv(self, registry: Any, name: str) -> list[str]:
        return [
            f"--model-name={name}",
            "--model-version=1",
            f"--registry-uri={registry.uri}",
            "--job-run=881",
            f"--audit-table={TABLE}",
            "--audit-warehouse-id=wh-1",
        ]

    def test_the_audit_row_lands_in_the_table(self, databricks: DatabricksStandIn, local_registry: Any) -> None:
        name = local_registry.register()

        assert main(self.argv(local_registry, name)) == 0

        (row,) = databricks.tables[TABLE]
        assert (row["model_name"], row["outcome"], row["job_run"]) == (name, "validated", "881")
        assert local_registry.client.get_model_version(name, "1").tags["deployment.status"] == "validated"

    def test_an_audit_failure_fails_the_job_before_any_tag_claims_an_outcome(
        self, databricks: DatabricksStandIn, local_registry: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        databricks.statement_plan = lambda sql: (
            0,
            "BAD_REQUEST: [SCHEMA_NOT_FOUND] The schema `main`.`mlops` cannot be found.",
        )
        name = local_registry.register()

        assert main(self.argv(local_registry, name)) == 3

        err = capsys.readouterr().err
        assert err.startswith("error: audit table main.mlops.deployment_audit on SQL warehouse wh-1: statement FAILED")
        assert "Traceback" not in err
        assert not any(
            k.startswith(("deployment.", "validation."))
            for k in local_registry.client.get_model_version(name, "1").tags
        )

"""One audit row per job run: to a Unity Catalog table through a SQL warehouse, or a JSON Lines file.

The registry tags show the latest outcome per version; the audit table keeps every run,
including superseded ones, so "what happened to version 7 last Tuesday" has an answer.

The table is written with the SQL Statement Execution API (``databricks-sdk``
``statement_execution``) on the SQL warehouse ``--audit-warehouse-id`` names. That works from a
``python_wheel_task`` on serverless or classic compute alike, where no Spark session may be
active. Every value is a named statement parameter (the table too, through ``IDENTIFIER``), so
nothing from an event is pasted into SQL. When the row cannot be written the job fails
(``AuditFailed``); it never falls back to somewhere else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from databricks_job.errors import AuditFailed

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRecord:
    """The row appended for a run; every field is a string so the table's schema stays stable."""

    recorded_at: str
    model_name: str
    model_version: str
    event: str
    delivery_id: str
    pipeline_run: str
    job_run: str
    outcome: str
    message: str


COLUMNS = tuple(f.name for f in fields(AuditRecord))
# Constant SQL: the table and every value are named parameters (tests check the columns match).
CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS IDENTIFIER(:table) (recorded_at STRING, model_name STRING, model_version STRING, "
    "event STRING, delivery_id STRING, pipeline_run STRING, job_run STRING, outcome STRING, message STRING)"
)
INSERT_ROW = (
    "INSERT INTO IDENTIFIER(:table) (recorded_at, model_name, model_version, event, delivery_id, pipeline_run, "
    "job_run, outcome, message) VALUES (:recorded_at, :model_name, :model_version, :event, :delivery_id, "
    ":pipeline_run, :job_run, :outcome, :message)"
)
_DONE = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"})


class AuditSink(Protocol):
    def append(self, record: AuditRecord) -> None: ...


class SqlStatementAuditSink:
    """Append to a table (created on first use) with SQL statements on a SQL warehouse."""

    def __init__(
        self,
        statements: Any,
        *,
        warehouse_id: str,
        table: str,
        timeout: float = 300.0,
        poll: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._statements, self._warehouse_id, self._table = statements, warehouse_id, table
        self._timeout, self._poll, self._sleep, self._clock = timeout, poll, sleep, clock
        self._table_checked = False

    def append(self, record: AuditRecord) -> None:
        """Write the row.

        Raises:
            AuditFailed: the warehouse refused or failed a statement, or it did not finish in time.
        """
        if not self._table_checked:
            self._run(CREATE_TABLE, {"table": self._table})
            self._table_checked = True
        self._run(INSERT_ROW, {"table": self._table, **asdict(record)})

    def _run(self, statement: str, values: dict[str, str]) -> None:
        from databricks.sdk.errors.base import DatabricksError
        from databricks.sdk.service.sql import ExecuteStatementRequestOnWaitTimeout, StatementParameterListItem

        where = f"audit table {self._table} on SQL warehouse {self._warehouse_id}"
        parameters = [StatementParameterListItem(name=k, value=v, type="STRING") for k, v in values.items()]
        try:
            response = self._statements.execute_statement(
                statement=statement,
                warehouse_id=self._warehouse_id,
                parameters=parameters,
                wait_timeout="30s",
                on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE,
            )
            deadline = self._clock() + self._timeout
            while _state(response) not in _DONE and self._clock() < deadline:
                self._sleep(self._poll)
                response = self._statements.get_statement(response.statement_id)
        except DatabricksError as exc:
            raise AuditFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
        state = _state(response)
        if state != "SUCCEEDED":
            error = response.status.error if response.status else None
            code = error.error_code.value if error and error.error_code else "UNKNOWN"
            detail = f"{code}: {error.message}" if error else f"still {state} after {int(self._timeout)} s"
            raise AuditFailed(f"{where}: statement {state}: {detail}")


def _state(response: Any) -> str:
    status = response.status
    return status.state.value if status and status.state else "PENDING"


class JsonLinesAuditSink:
    """Append one JSON object per line to a local (or ``/Volumes/...``) file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def append(self, record: AuditRecord) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")
        except OSError as exc:
            raise AuditFailed(f"audit file {self._path}: {exc}") from exc


class LogOnlyAuditSink:
    """Neither a table nor a file was configured: the row goes to the job's log, and the log says so."""

    def append(self, record: AuditRecord) -> None:
        _log.info("audit (no --audit-table or --audit-path configured): %s", json.dumps(asdict(record), sort_keys=True))


def choose_sink(*, table: str, warehouse_id: str, path: str, statements: Callable[[], Any]) -> AuditSink:
    """The sink the parameters ask for; ``statements`` builds the SDK's statement API when needed.

    ``parse_job_args`` already refused a table without a warehouse.
    """
    if table:
        return SqlStatementAuditSink(statements(), warehouse_id=warehouse_id, table=table)
    if path:
        return JsonLinesAuditSink(Path(path))
    return LogOnlyAuditSink()

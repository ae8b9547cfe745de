"""One audit row per job run: to a Delta table on Databricks, or a JSON Lines file elsewhere.

The registry tags show the latest outcome per version; the audit table keeps every run,
including superseded ones, so "what happened to version 7 last Tuesday" has an answer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRecord:
    """The row appended for a run; every field is a string so the Delta schema stays stable."""

    recorded_at: str
    model_name: str
    model_version: str
    event: str
    delivery_id: str
    pipeline_run: str
    job_run: str
    outcome: str
    message: str


class AuditSink(Protocol):
    def append(self, record: AuditRecord) -> None: ...


class DeltaAuditSink:
    """Append to a Delta table through a Spark session (the table is created on first write)."""

    def __init__(self, spark: Any, table: str) -> None:
        self._spark = spark
        self._table = table

    def append(self, record: AuditRecord) -> None:
        frame = self._spark.createDataFrame([asdict(record)])
        frame.write.format("delta").mode("append").option("mergeSchema", "true").saveAsTable(self._table)


class JsonLinesAuditSink:
    """Append one JSON object per line to a local (or ``/Volumes/...``) file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def append(self, record: AuditRecord) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")


class LogOnlyAuditSink:
    """No table or path configured: the row goes to the job's log only."""

    def append(self, record: AuditRecord) -> None:
        _log.info("audit: %s", json.dumps(asdict(record), sort_keys=True))


def active_spark_session() -> Any | None:
    """The running Spark session on Databricks, or ``None`` where there is no Spark."""
    try:
        from pyspark.sql import SparkSession  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def choose_sink(*, table: str, path: str, spark: Any | None) -> AuditSink:
    """Prefer the Delta table when Spark is there, then the file, then the log."""
    if table and spark is not None:
        return DeltaAuditSink(spark, table)
    if table:
        _log.warning("audit table %s requested but no Spark session is active", table)
    if path:
        return JsonLinesAuditSink(Path(path))
    return LogOnlyAuditSink()

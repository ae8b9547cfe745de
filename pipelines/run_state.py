"""What the run step leaves for the write-back step: the Databricks run it started and how it ended.

Both steps run in the same job, so a file under ``$(Agent.TempDirectory)`` (``RUN_STATE_FILE``)
is enough. The run step writes it as soon as ``run-now`` answers, before anything else can
fail, so a cancel at any later moment still finds the run to cancel.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

STATE_FILE_ENV = "RUN_STATE_FILE"
STARTED, FINISHED, CANCELED, TIMED_OUT = "started", "finished", "canceled", "timed_out"


@dataclass(frozen=True)
class RunState:
    """The Databricks run of this pipeline run; ``status`` is how the run step left it."""

    job_id: int
    run_id: int
    run_page_url: str = ""
    status: str = STARTED
    detail: str = ""

    def with_status(self, status: str, detail: str = "", run_page_url: str = "") -> RunState:
        return replace(self, status=status, detail=detail, run_page_url=run_page_url or self.run_page_url)


def save(path: Path, state: RunState) -> None:
    """Write ``state`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(state), sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


def load(path: Path) -> RunState | None:
    """The saved state, or ``None`` when the run step never started a Databricks run.

    Raises:
        ValueError: the file exists but is not a state this module wrote.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a run state file: {exc}") from None
    try:
        return RunState(
            job_id=int(document["job_id"]),
            run_id=int(document["run_id"]),
            run_page_url=str(document.get("run_page_url", "")),
            status=str(document.get("status", STARTED)),
            detail=str(document.get("detail", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a run state file: {exc!r}") from None

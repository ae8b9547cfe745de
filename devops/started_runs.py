"""Find the run an earlier, ambiguous attempt may have started, in as few calls as possible.

Runs - List carries no template parameters, so it only narrows the search: the runs created
since the first claim of the delivery (less a clock slack) are the candidates, and Runs - Get
reads their parameters, newest first, until one carries the delivery id. Every call fits in
the attempt's deadline; when the check cannot finish, it raises rather than guess, because
posting again without it could start the run twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from devops.responses import run_from_document
from relay.budgets import fixed_durations
from relay.ports import Deadline, DevOpsUnavailable, PipelineRun
from webhook.routing import PipelineRunRequest

log = logging.getLogger("relay.devops")
GetJson = Callable[..., Any]


class StartedRunFinder:
    """Looks a delivery's run up through ``get_json(url, timeout=...)``."""

    def __init__(self, get_json: GetJson, *, org_url: str, api_version: str) -> None:
        self._get_json = get_json
        self._org_url = org_url
        self._api_version = api_version

    def find(
        self, request: PipelineRunRequest, *, since: float, deadline: Deadline, attempt_timeout: float
    ) -> PipelineRun | None:
        """The run whose parameters carry ``request.delivery_id``, created since ``since``.

        Raises:
            DevOpsUnavailable: a call failed or the deadline ran out before the check finished.
        """
        if request.delivery_id not in request.template_parameters.values():
            log.warning(
                "cannot check for an already started run (no parameter carries the delivery id) delivery_id=%r rule=%s",
                request.delivery_id,
                request.rule,
            )
            return None
        base = f"{self._org_url}/{quote(request.project, safe='')}/_apis/pipelines/{request.pipeline_id}/runs"
        listing = self._call(f"{base}?api-version={self._api_version}", deadline, attempt_timeout)
        entries = listing.get("value") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise DevOpsUnavailable("checking for a started run: unexpected runs listing", ambiguous=True)
        for run_id in candidates(entries, since=since - fixed_durations().clock_slack):
            run = self._call(f"{base}/{run_id}?api-version={self._api_version}", deadline, attempt_timeout)
            parameters = run.get("templateParameters") if isinstance(run, dict) else None
            if isinstance(parameters, dict) and request.delivery_id in parameters.values():
                return run_from_document(request, run)
        return None

    def _call(self, url: str, deadline: Deadline, attempt_timeout: float) -> Any:
        remaining = deadline.remaining()
        if remaining <= 0.05:
            raise DevOpsUnavailable("checking for a started run: the deadline ran out", ambiguous=True)
        return self._get_json(url, timeout=min(attempt_timeout, remaining))


def candidates(entries: list[Any], *, since: float) -> list[int]:
    """Ids of the listed runs created at or after ``since`` (unknown dates count), newest first."""
    found = [
        int(e["id"])
        for e in entries
        if isinstance(e, dict) and str(e.get("id", "")).isdigit() and _created_after(e.get("createdDate"), since)
    ]
    return sorted(found, reverse=True)


def _created_after(created: Any, since: float) -> bool:
    if not isinstance(created, str):
        return True  # unknown: check it rather than miss it
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() >= since
    except ValueError:
        return True

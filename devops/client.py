"""Start Azure DevOps pipeline runs (``POST .../_apis/pipelines/{id}/runs``), with bounded
retries for throttling and outages, a check for a run an ambiguous failure may have started,
and clear errors for everything else. Implements ``relay.ports.PipelineStarter``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from devops.auth import DevOpsAuth
from devops.responses import AuthRejected, Retryable, interpret_run_answer
from devops.retry import RetryPolicy
from devops.started_runs import StartedRunFinder
from relay.ports import Deadline, DevOpsUnavailable, PipelineRejected, PipelineRun
from webhook.routing import PipelineRunRequest

API_VERSION = "7.1"
log = logging.getLogger("relay.devops")


def runs_endpoint(org_url: str, request: PipelineRunRequest) -> str:
    """``{org}/{project}/_apis/pipelines/{id}/runs`` (no query); the project is one escaped segment."""
    return f"{org_url.rstrip('/')}/{quote(request.project, safe='')}/_apis/pipelines/{request.pipeline_id}/runs"


def run_request_body(request: PipelineRunRequest, *, preview: bool = False) -> dict[str, Any]:
    """The JSON body Azure DevOps expects for ``request`` (``previewRun`` starts nothing)."""
    body: dict[str, Any] = {"templateParameters": dict(request.template_parameters)}
    if request.branch:
        body["resources"] = {"repositories": {"self": {"refName": request.branch}}}
    if preview:
        body["previewRun"] = True
    return body


class AzureDevOpsClient:
    """Starts pipeline runs; one instance (and one ``httpx.Client``) per process."""

    def __init__(
        self,
        *,
        org_url: str,
        auth: DevOpsAuth,
        http: httpx.Client,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._org_url = org_url.rstrip("/")
        self._auth = auth
        self._http = http
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._finder = StartedRunFinder(self._get_json, org_url=self._org_url, api_version=API_VERSION)

    def runs_url(self, request: PipelineRunRequest) -> str:
        return f"{runs_endpoint(self._org_url, request)}?api-version={API_VERSION}"

    def deadline(self) -> Deadline:
        """A fresh deadline of the policy's length, on this client's clock."""
        return Deadline.after(self._policy.deadline, clock=self._clock)

    def find_started(self, request: PipelineRunRequest, *, since: float, deadline: Deadline) -> PipelineRun | None:
        """The run ``request`` started since ``since`` (unix s), if any. Raises ``DevOpsUnavailable``."""
        return self._finder.find(request, since=since, deadline=deadline, attempt_timeout=self._policy.attempt_timeout)

    def start(self, request: PipelineRunRequest, *, deadline: Deadline | None = None) -> PipelineRun:
        """Start one run, retrying 429/5xx/timeouts before ``deadline``.

        After an ambiguous failure, the run is looked for before it is posted again.

        Raises:
            PipelineRejected: DevOps refused the run (4xx, sign-in page, unexpected answer).
            DevOpsUnavailable: still failing when the deadline or attempts ran out (``ambiguous``
                when a run may have been created meanwhile).
            SecretsUnavailable: the PAT or token could not be obtained.
        """
        deadline = deadline or self.deadline()
        started_at = self._wall_clock()
        reauthenticated = maybe_created = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._post(request, timeout=self._attempt_timeout(deadline))
            except AuthRejected as exc:
                if reauthenticated:
                    raise PipelineRejected(exc.detail) from None
                reauthenticated = True  # a rotated PAT or expired token: fetch afresh once
                self._auth.invalidate()
                continue
            except Retryable as exc:
                maybe_created = maybe_created or exc.ambiguous
                self._wait_before_retry(request, attempt, exc, deadline, maybe_created=maybe_created)
            if maybe_created and (found := self._recheck(request, since=started_at, deadline=deadline)):
                return found

    def _attempt_timeout(self, deadline: Deadline) -> float:
        return max(0.1, min(self._policy.attempt_timeout, deadline.remaining()))

    def _wait_before_retry(
        self, request: PipelineRunRequest, attempt: int, exc: Retryable, deadline: Deadline, *, maybe_created: bool
    ) -> None:
        """Sleep before the next attempt. Raises ``DevOpsUnavailable`` when there is no time left."""
        wait = self._policy.backoff(attempt, exc.retry_after)
        log.warning(
            "devops attempt %d failed delivery_id=%r rule=%s reason=%s",
            attempt,
            request.delivery_id,
            request.rule,
            exc.reason,
        )
        if attempt >= self._policy.max_attempts or wait >= deadline.remaining():
            raise DevOpsUnavailable(
                f"Azure DevOps unavailable after {attempt} attempt(s): {exc.reason}",
                retry_after=max(30, int(exc.retry_after or 0)),
                ambiguous=maybe_created,
                server_retry_after=exc.retry_after,
            )
        self._sleep(wait)

    def _recheck(self, request: PipelineRunRequest, *, since: float, deadline: Deadline) -> PipelineRun | None:
        found = self.find_started(request, since=since, deadline=deadline)
        if found is not None:
            log.warning(
                "devops run found after an ambiguous failure: not starting it again delivery_id=%r rule=%s run_id=%s",
                request.delivery_id,
                request.rule,
                found.run_id,
            )
        return found

    def preview(self, request: PipelineRunRequest, *, timeout: float = 10.0) -> dict[str, Any]:
        """Ask for a preview run (``previewRun: true`` starts nothing) and return the answer.

        Raises:
            PipelineRejected: DevOps refused the parameters or the credentials.
            DevOpsUnavailable: DevOps did not answer.
        """
        try:
            response = self._http.post(
                self.runs_url(request),
                json=run_request_body(request, preview=True),
                headers=self._headers(),
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise DevOpsUnavailable(f"Azure DevOps unreachable: {type(exc).__name__}") from None
        try:
            interpret_run_answer(request, response, preview=True)
        except AuthRejected as exc:
            raise PipelineRejected(exc.detail) from None
        except Retryable as exc:
            raise DevOpsUnavailable(f"Azure DevOps answered the preview {exc.reason}") from None
        document = response.json()
        return document if isinstance(document, dict) else {}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._auth.authorization(), "Accept": "application/json"}

    def _post(self, request: PipelineRunRequest, *, timeout: float) -> PipelineRun:
        try:
            response = self._http.post(
                self.runs_url(request), json=run_request_body(request), headers=self._headers(), timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Retryable(f"could not connect: {type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise Retryable(f"no answer within {timeout:.1f} s", ambiguous=True) from None
        except httpx.TransportError as exc:
            raise Retryable(f"connection lost: {type(exc).__name__}", ambiguous=True) from None
        return interpret_run_answer(request, response)

    def _get_json(self, url: str, *, timeout: float) -> Any:
        try:
            response = self._http.get(url, headers=self._headers(), timeout=timeout)
        except httpx.TransportError as exc:
            raise DevOpsUnavailable(
                f"checking for a started run failed: {type(exc).__name__}", ambiguous=True
            ) from None
        if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
            raise DevOpsUnavailable(f"checking for a started run: HTTP {response.status_code}", ambiguous=True)
        return response.json()


class DryRunStarter:
    """Starts nothing: answers with what would have been sent (``serve --dry-run``, ``demo``)."""

    def start(self, request: PipelineRunRequest, *, deadline: Deadline | None = None) -> PipelineRun:
        return PipelineRun(rule=request.rule, pipeline_id=request.pipeline_id, run_id=None, url=None)

    def find_started(self, request: PipelineRunRequest, *, since: float, deadline: Deadline) -> PipelineRun | None:
        return None

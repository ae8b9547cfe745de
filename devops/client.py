"""Start Azure DevOps pipeline runs (``POST .../_apis/pipelines/{id}/runs``), with bounded
retries for throttling and outages and clear errors for everything else."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from devops.auth import DevOpsAuth
from devops.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from webhook.errors import DevOpsUnavailable, PipelineRejected
from webhook.routing import PipelineRunRequest

API_VERSION = "7.1"
log = logging.getLogger("relay.devops")


@dataclass(frozen=True)
class PipelineRun:
    """A started run: what the relay answers and records."""

    rule: str
    pipeline_id: int
    run_id: int | None
    url: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "pipeline_id": self.pipeline_id, "run_id": self.run_id, "url": self.url}


class PipelineStarter(Protocol):
    """Anything that can start one pipeline run (the real client, or the dry-run one)."""

    def start(self, request: PipelineRunRequest) -> PipelineRun: ...


def runs_endpoint(org_url: str, request: PipelineRunRequest) -> str:
    """``{org}/{project}/_apis/pipelines/{id}/runs`` (no query); the project is one escaped segment."""
    return f"{org_url.rstrip('/')}/{quote(request.project, safe='')}/_apis/pipelines/{request.pipeline_id}/runs"


def run_request_body(request: PipelineRunRequest) -> dict[str, Any]:
    """The JSON body Azure DevOps expects for ``request``."""
    body: dict[str, Any] = {"templateParameters": dict(request.template_parameters)}
    if request.branch:
        body["resources"] = {"repositories": {"self": {"refName": request.branch}}}
    return body


class _Retry(Exception):
    """Internal: this attempt failed transiently.

    ``ambiguous`` means the run may have been created anyway (the request reached DevOps but
    no answer came back, or a gateway error): POSTing again could start it twice.
    """

    def __init__(self, reason: str, retry_after: float | None = None, *, ambiguous: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.ambiguous = ambiguous


# 429 and 503 mean "not processed"; a gateway error or a lost answer may hide a started run.
_AMBIGUOUS_STATUS = frozenset({500, 502, 504})
_RECONCILE_WINDOW_SECONDS = 300
_RECONCILE_MAX_RUNS = 20


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
    ) -> None:
        self._org_url = org_url.rstrip("/")
        self._auth = auth
        self._http = http
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def runs_url(self, request: PipelineRunRequest) -> str:
        return f"{runs_endpoint(self._org_url, request)}?api-version={API_VERSION}"

    def start(self, request: PipelineRunRequest) -> PipelineRun:
        """Start one run, retrying 429/5xx/timeouts inside the policy's deadline.

        Raises:
            PipelineRejected: DevOps refused the run (4xx, sign-in page, unexpected answer).
            DevOpsUnavailable: still failing transiently when the deadline or attempts ran out.
            SecretsUnavailable: the PAT or token could not be obtained.
        """
        policy = self._policy
        deadline_at = self._clock() + policy.deadline
        started_at = time.time()
        reauthenticated = False
        maybe_created = False
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline_at - self._clock()
            timeout = max(0.1, min(policy.attempt_timeout, remaining))
            try:
                if maybe_created:
                    found = self._find_started_run(
                        request, since=started_at - _RECONCILE_WINDOW_SECONDS, timeout=timeout
                    )
                    if found is not None:
                        log.warning(
                            "devops run found after an ambiguous failure: not starting it again "
                            "delivery_id=%s rule=%s run_id=%s",
                            request.delivery_id,
                            request.rule,
                            found.run_id,
                        )
                        return found
                return self._attempt(request, timeout=timeout)
            except _AuthRejected as exc:
                if reauthenticated:
                    raise PipelineRejected(exc.detail) from None
                reauthenticated = True  # a rotated PAT or expired token: fetch afresh once
                self._auth.invalidate()
                continue
            except _Retry as exc:
                maybe_created = maybe_created or exc.ambiguous
                wait = policy.backoff(attempt, exc.retry_after)
                remaining = deadline_at - self._clock()
                log.warning("devops attempt %d failed delivery_id=%s rule=%s reason=%s",
                            attempt, request.delivery_id, request.rule, exc.reason)  # fmt: skip
                if attempt >= policy.max_attempts or wait >= remaining:
                    retry_after = max(30, int(exc.retry_after or 0))
                    raise DevOpsUnavailable(
                        f"Azure DevOps unavailable after {attempt} attempt(s): {exc.reason}",
                        retry_after=retry_after,
                    ) from None
                self._sleep(wait)

    def _attempt(self, request: PipelineRunRequest, *, timeout: float) -> PipelineRun:
        try:
            response = self._http.post(
                self.runs_url(request),
                json=run_request_body(request),
                headers={"Authorization": self._auth.authorization(), "Accept": "application/json"},
                timeout=timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Retry(f"could not connect: {type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {timeout:.1f} s", ambiguous=True) from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection lost: {type(exc).__name__}", ambiguous=True) from None
        return self._interpret(request, response)

    def _get_json(self, url: str, *, timeout: float) -> Any:
        try:
            response = self._http.get(url, headers={"Authorization": self._auth.authorization(),
                                                    "Accept": "application/json"}, timeout=timeout)  # fmt: skip
        except httpx.TransportError as exc:
            raise _Retry(f"reconciliation failed: {type(exc).__name__}", ambiguous=True) from None
        if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
            raise _Retry(f"reconciliation answered HTTP {response.status_code}", ambiguous=True)
        return response.json()

    def _find_started_run(self, request: PipelineRunRequest, *, since: float, timeout: float) -> PipelineRun | None:
        """After an ambiguous failure, look for a run this request already started.

        Runs are recognised by a template parameter holding the delivery id (the default
        parameters include it). Without one there is nothing to recognise them by, and the
        relay falls back to at-least-once.
        """
        if request.delivery_id not in request.template_parameters.values():
            log.warning("cannot check for an already started run (no parameter carries the delivery id) "
                        "delivery_id=%s rule=%s", request.delivery_id, request.rule)  # fmt: skip
            return None
        base = runs_endpoint(self._org_url, request)
        listing = self._get_json(f"{base}?api-version={API_VERSION}", timeout=timeout)
        entries = listing.get("value") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise _Retry("reconciliation: unexpected runs listing", ambiguous=True)
        recent = [
            r for r in entries
            if isinstance(r, dict) and str(r.get("id", "")).isdigit() and _created_after(r.get("createdDate"), since)
        ]  # fmt: skip
        for summary in sorted(recent, key=lambda r: int(r["id"]), reverse=True)[:_RECONCILE_MAX_RUNS]:
            run = self._get_json(f"{base}/{int(summary['id'])}?api-version={API_VERSION}", timeout=timeout)
            parameters = run.get("templateParameters") if isinstance(run, dict) else None
            if isinstance(parameters, dict) and request.delivery_id in parameters.values():
                web = ((run.get("_links") or {}).get("web") or {}).get("href") or run.get("url")
                return PipelineRun(rule=request.rule, pipeline_id=request.pipeline_id, run_id=int(run["id"]), url=web)
        return None

    def _interpret(self, request: PipelineRunRequest, response: httpx.Response) -> PipelineRun:
        status = response.status_code
        if status in RETRYABLE_STATUS:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
            raise _Retry(f"HTTP {status}", retry_after, ambiguous=status in _AMBIGUOUS_STATUS)
        if status in (401, 403):
            raise _AuthRejected(
                f"Azure DevOps refused the credentials (HTTP {status}) for pipeline "
                f"{request.pipeline_id}: check the PAT or the managed identity's access. "
                f"{_devops_message(response)}".strip()
            )
        is_json = "json" in response.headers.get("content-type", "").lower()
        if status == 203 or (200 <= status < 300 and not is_json):
            raise _AuthRejected(
                f"Azure DevOps answered HTTP {status} with a sign-in page instead of JSON: "
                "the PAT is invalid or expired, or the identity is not a member of the organisation"
            )
        if not 200 <= status < 300:
            raise PipelineRejected(
                f"Azure DevOps rejected the run of pipeline {request.pipeline_id} "
                f"(rule {request.rule!r}, HTTP {status}): {_devops_message(response) or 'no message'}"
            )
        return _started_run(request, response)


class _AuthRejected(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _created_after(created: Any, since: float) -> bool:
    if not isinstance(created, str):
        return True  # unknown: check it rather than miss it
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() >= since
    except ValueError:
        return True


def _devops_message(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    message = document.get("message") if isinstance(document, dict) else None
    return str(message)[:500] if message else ""


def _started_run(request: PipelineRunRequest, response: httpx.Response) -> PipelineRun:
    try:
        document = response.json()
        run_id = int(document["id"])
    except (ValueError, KeyError, TypeError):
        raise PipelineRejected(
            f"Azure DevOps answered HTTP {response.status_code} without a run id for pipeline {request.pipeline_id}"
        ) from None
    links = document.get("_links") or {}
    url = (links.get("web") or {}).get("href") or document.get("url")
    return PipelineRun(rule=request.rule, pipeline_id=request.pipeline_id, run_id=run_id, url=url)


class DryRunStarter:
    """Starts nothing: answers with what would have been sent (``serve --dry-run``, ``demo``)."""

    def start(self, request: PipelineRunRequest) -> PipelineRun:
        return PipelineRun(rule=request.rule, pipeline_id=request.pipeline_id, run_id=None, url=None)

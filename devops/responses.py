"""What an Azure DevOps answer to a run request means: a run, a refusal, or a retry."""

from __future__ import annotations

import time

import httpx

from devops.retry import RETRYABLE_STATUS, parse_retry_after
from relay.ports import PipelineRejected, PipelineRun
from webhook.routing import PipelineRunRequest

# 429 and 503 mean "not processed"; a gateway error or a lost answer may hide a started run.
AMBIGUOUS_STATUS = frozenset({500, 502, 504})


class Retryable(Exception):
    """This attempt failed transiently; ``ambiguous``: the run may have been created anyway."""

    def __init__(self, reason: str, retry_after: float | None = None, *, ambiguous: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class AuthRejected(Exception):
    """The credentials were refused: worth one retry with fresh ones, then a refusal."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def devops_message(response: httpx.Response) -> str:
    """Azure DevOps' own ``message`` from an error answer (bounded), or ``""``."""
    try:
        document = response.json()
    except ValueError:
        return ""
    message = document.get("message") if isinstance(document, dict) else None
    return str(message)[:500] if message else ""


def interpret_run_answer(
    request: PipelineRunRequest, response: httpx.Response, *, preview: bool = False
) -> PipelineRun:
    """The run in a successful answer.

    Raises:
        Retryable: 408/429/5xx.
        AuthRejected: 401/403, or a 203 / non-JSON sign-in page.
        PipelineRejected: any other refusal, or a success without a run id.
    """
    status = response.status_code
    if status in RETRYABLE_STATUS:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        raise Retryable(f"HTTP {status}", retry_after, ambiguous=status in AMBIGUOUS_STATUS)
    if status in (401, 403):
        raise AuthRejected(
            f"Azure DevOps refused the credentials (HTTP {status}) for pipeline {request.pipeline_id}: "
            f"check the PAT or the managed identity's access. {devops_message(response)}".strip()
        )
    is_json = "json" in response.headers.get("content-type", "").lower()
    if status == 203 or (200 <= status < 300 and not is_json):
        raise AuthRejected(
            f"Azure DevOps answered HTTP {status} with a sign-in page instead of JSON: "
            "the PAT is invalid or expired, or the identity is not a member of the organisation"
        )
    if not 200 <= status < 300:
        raise PipelineRejected(
            f"Azure DevOps rejected the run of pipeline {request.pipeline_id} "
            f"(rule {request.rule!r}, HTTP {status}): {devops_message(response) or 'no message'}"
        )
    if preview:
        return PipelineRun(rule=request.rule, pipeline_id=request.pipeline_id, run_id=None, url=None)
    return started_run(request, response)


def run_from_document(request: PipelineRunRequest, document: dict[str, object]) -> PipelineRun:
    """A ``PipelineRun`` from a Runs API run document. Raises ``KeyError``/``ValueError``."""
    links = document.get("_links") or {}
    web = links.get("web") if isinstance(links, dict) else None
    url = (web.get("href") if isinstance(web, dict) else None) or document.get("url")
    return PipelineRun(
        rule=request.rule,
        pipeline_id=request.pipeline_id,
        run_id=int(str(document["id"])),
        url=str(url) if url else None,
    )


def started_run(request: PipelineRunRequest, response: httpx.Response) -> PipelineRun:
    try:
        document = response.json()
        return run_from_document(request, document)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PipelineRejected(
            f"Azure DevOps answered HTTP {response.status_code} without a run id for pipeline {request.pipeline_id}"
        ) from None

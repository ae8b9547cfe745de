"""The queue-triggered retry of a pipeline run that Azure DevOps could not take in time.

Each message is one attempt. A transient failure re-enqueues the run with a longer delay; the
last failure, a refusal from Azure DevOps, or an unreadable message goes to the poison queue
with an error line that says which model version did not deploy and why.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Protocol

from pydantic import ValidationError

from devops.client import PipelineStarter
from relay.decisions import log_decision
from relay.ledger import DeliveryLedger, EntryState
from relay.service import RetryQueue
from webhook.errors import DependencyUnavailable, PipelineRejected, RelayError
from webhook.routing import PipelineRunRequest

QUEUE_BASE_DELAY_SECONDS = 60.0
QUEUE_MAX_DELAY_SECONDS = 3600.0


class PoisonQueue(Protocol):
    def poison(self, raw_message: str, *, reason: str) -> None: ...


def queue_backoff(attempt: int, retry_after: float | None, *, jitter: Callable[[], float] = random.random) -> float:
    """Delay before queue attempt ``attempt + 1``: 1, 2, 4 … 60 min (±25 %), or Retry-After."""
    window = min(QUEUE_MAX_DELAY_SECONDS, QUEUE_BASE_DELAY_SECONDS * 2.0 ** (attempt - 1))
    return max(retry_after or 0.0, window * (0.75 + 0.5 * float(jitter())))


class RetryWorker:
    """Processes one retry message; raises only if it cannot even record the outcome."""

    def __init__(
        self,
        *,
        starter: PipelineStarter,
        ledger: DeliveryLedger,
        queue: RetryQueue,
        poison: PoisonQueue,
        max_attempts: int,
        backoff: Callable[[int, float | None], float] = queue_backoff,
    ) -> None:
        self._starter = starter
        self._ledger = ledger
        self._queue = queue
        self._poison = poison
        self._max_attempts = max_attempts
        self._backoff = backoff

    def process(self, raw_message: str) -> str:
        """Handle one message; returns the decision (triggered, duplicate, requeued, poisoned)."""
        try:
            document = json.loads(raw_message)
            attempt = int(document["attempt"])
            request = PipelineRunRequest.model_validate(document["request"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            self._poison.poison(raw_message, reason=f"unreadable retry message: {type(exc).__name__}")
            log_decision("poisoned", level=logging.ERROR, detail="unreadable retry message")
            return "poisoned"
        return self._retry(request, attempt, raw_message)

    def _retry(self, request: PipelineRunRequest, attempt: int, raw_message: str) -> str:
        ids = request.correlation
        claim = self._ledger.claim(request.idempotency_key, from_queue=True)
        if not claim.won:
            # Already started (a duplicate message), or a live attempt holds it: nothing to do.
            log_decision("duplicate", ids, detail=f"retry skipped: {claim.entry.state.value}")
            return "duplicate"
        try:
            run = self._starter.start(request)
        except DependencyUnavailable as exc:
            if attempt >= self._max_attempts:
                return self._give_up(
                    request, raw_message, f"still unavailable after {attempt} attempts: {exc.detail}", ids
                )
            self._queue.enqueue(request, attempt=attempt + 1, delay=self._backoff(attempt, float(exc.retry_after)))
            self._ledger.record(request.idempotency_key, EntryState.QUEUED, detail=exc.detail)
            log_decision("requeued", ids, level=logging.WARNING, detail=f"attempt {attempt}: {exc.detail}")
            return "requeued"
        except PipelineRejected as exc:
            return self._give_up(request, raw_message, exc.detail, ids)
        except RelayError as exc:
            return self._give_up(request, raw_message, exc.detail, ids)
        self._ledger.record(request.idempotency_key, EntryState.STARTED, run=run)
        log_decision("triggered", ids, run_id=run.run_id, detail=f"from retry queue, attempt {attempt}")
        return "triggered"

    def _give_up(self, request: PipelineRunRequest, raw_message: str, reason: str, ids: Mapping[str, object]) -> str:
        self._ledger.record(request.idempotency_key, EntryState.FAILED, detail=reason)
        self._poison.poison(raw_message, reason=reason)
        log_decision(
            "poisoned", ids, level=logging.ERROR,
            detail=f"model {request.model_name} version {request.version} was NOT deployed by rule "
                   f"{request.rule}: {reason}")  # fmt: skip
        return "poisoned"

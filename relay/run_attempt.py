"""One attempt at one run while holding its claim: look, start, record — fenced.

Shared by the request service and the retry worker. A claim that is not ``fresh`` means an
earlier attempt may have started the run, so it is looked for before anything is posted.
Every record is conditional on the claim; a holder that lost it says so and stops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from relay.decisions import log_decision
from relay.ports import (
    Claim,
    ClaimLost,
    Deadline,
    DeliveryLedger,
    DependencyUnavailable,
    EntryState,
    PipelineRejected,
    PipelineRun,
    PipelineStarter,
    StorageUnavailable,
)


@dataclass(frozen=True)
class AttemptResult:
    """``status``: triggered | duplicate | refused | unavailable (then ``error`` says why)."""

    status: str
    claim: Claim
    run: PipelineRun | None = None
    error: DependencyUnavailable | None = None
    detail: str = ""


def attempt_run(
    claim: Claim, *, starter: PipelineStarter, ledger: DeliveryLedger, deadline: Deadline, source: str
) -> AttemptResult:
    """Start ``claim``'s run unless an earlier attempt did; record the outcome.

    Raises:
        anything but the dependency errors above (the caller releases the claim).
    """
    request = claim.request
    ids = request.correlation
    try:
        found = None if claim.fresh else starter.find_started(request, since=claim.first_claimed_at, deadline=deadline)
        run = found or starter.start(request, deadline=deadline)
    except PipelineRejected as exc:
        record(ledger, claim, EntryState.REFUSED, ids, detail=exc.detail)
        log_decision("refused", ids, level=logging.ERROR, detail=exc.detail)
        return AttemptResult("refused", claim, detail=exc.detail)
    except DependencyUnavailable as exc:
        return AttemptResult("unavailable", claim, error=exc, detail=exc.detail)
    claim = record(ledger, claim, EntryState.STARTED, ids, run=run) or claim
    if found is not None:
        log_decision("duplicate", ids, run_id=run.run_id, detail=f"{source}: found the run an earlier attempt started")
        return AttemptResult("duplicate", claim, run=run)
    log_decision("triggered", ids, run_id=run.run_id, detail=source)
    return AttemptResult("triggered", claim, run=run)


def record(
    ledger: DeliveryLedger,
    claim: Claim,
    state: EntryState,
    ids: Mapping[str, object],
    *,
    run: PipelineRun | None = None,
    detail: str = "",
    attempts: int | None = None,
) -> Claim | None:
    """Record ``state`` under ``claim``; ``None`` (logged) when the write did not land.

    A lost claim means a successor holds the entry: it looks for our run before posting, so
    a started run is found there. A failed write leaves the claim to expire: the same holds.
    """
    try:
        return ledger.record(claim, state, run=run, detail=detail, attempts=attempts)
    except ClaimLost:
        log_decision(
            "claim_lost",
            ids,
            level=logging.WARNING,
            run_id=run.run_id if run else None,
            detail=f"another attempt holds this delivery now; not recording {state.value}",
        )
    except StorageUnavailable as exc:
        log_decision(
            "unrecorded",
            ids,
            level=logging.WARNING,
            run_id=run.run_id if run else None,
            detail=f"could not record {state.value} ({exc.detail}); the claim will expire",
        )
    return None

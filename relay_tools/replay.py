"""``deliveries replay``: route a stored, verified event again under today's rules.

Exactly once still holds: a rule whose run started answers ``duplicate`` and starts nothing,
whether the delivery log's record says so (which may outlive the ledger's entry) or the
relay's own dispatch, under the delivery's own id, finds the run in the ledger. A run
Azure DevOps refused, or the retry queue gave up on, is reopened first (the ledger records who
did it) and started now. ``--force`` starts new runs on purpose: under a derived delivery id
``<id>~replay-<n>`` (the next free ``n``), so two operators forcing at once still start one run
per rule, and the new record says who forced it and what it replays.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.answers import RelayResponse, RunOutcome, ignored_answer, outcomes_answer
from relay.composition import Relay
from relay.delivery_log import DeliveryLogStore
from relay.delivery_records import DeliveryRecord
from relay.ledger import REOPENABLE
from relay.ports import PipelineRun
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest

MAX_REPLAYS = 1000


@dataclass(frozen=True)
class ReplayResult:
    event: RegistryEvent
    outcomes: list[RunOutcome]
    answer: RelayResponse
    reopened: list[str]


def replay_delivery(
    relay: Relay,
    store: DeliveryLogStore,
    delivery_id: str,
    *,
    operator: str,
    rule: str | None = None,
    force: bool = False,
) -> ReplayResult:
    """Replay one delivery; the delivery log records the outcome (origin ``replay``).

    Raises:
        ValueError: no such delivery, no stored event, or ``rule`` matches nothing today.
        RelayError: a dependency failed for every rule left to start (storage, secrets).
    """
    record = store.get(delivery_id)
    if record is None:
        raise ValueError(f"no delivery {delivery_id!r} in the delivery log (or past its retention)")
    event = record.registry_event()
    if force:
        event = event.model_copy(update={"delivery_id": _next_replay_id(relay, store, event, delivery_id)})
    requests = _requests(relay, event, rule)
    reopened: list[str] = []
    if not requests:
        outcomes: list[RunOutcome] = []
        answer = ignored_answer(event)
    elif force:  # on purpose: no state gate, new keys, new runs
        outcomes = relay.service.dispatch(requests)
        answer = outcomes_answer(event, outcomes)
    else:
        outcomes, requests = _recorded_runs(record, requests)
        reopened = _reopen_failed(relay, requests, operator)
        outcomes += relay.service.dispatch(requests, event=event)
        answer = outcomes_answer(event, outcomes)
    assert relay.log is not None
    relay.log.log.delivered(
        event, outcomes, answer, origin="replay", forced_by=operator, replay_of=delivery_id if force else ""
    )
    relay.log.log.flush(timeout=15)
    return ReplayResult(event, outcomes, answer, reopened)


def _requests(relay: Relay, event: RegistryEvent, rule: str | None) -> list[PipelineRunRequest]:
    requests = relay.service.route(event)
    if rule is None:
        return requests
    chosen = [r for r in requests if r.rule == rule]
    if not chosen:
        matching = ", ".join(r.rule for r in requests) or "none"
        raise ValueError(f"rule {rule!r} does not match this event under today's rules (matching: {matching})")
    return chosen


def _recorded_runs(
    record: DeliveryRecord, requests: list[PipelineRunRequest]
) -> tuple[list[RunOutcome], list[PipelineRunRequest]]:
    """The rules whose run the delivery log records as started, answered duplicate from the
    record, and the rest. The log may keep a delivery longer than the ledger
    (``DELIVERY_LOG_RETENTION_DAYS`` > ``IDEMPOTENCY_RETENTION_DAYS``); past the ledger's
    retention a claim would be fresh, and the run would start a second time."""
    started = {r.rule: r for r in record.rules if r.run_id is not None}
    outcomes, rest = [], []
    for request in requests:
        rule = started.get(request.rule)
        if rule is None:
            rest.append(request)
            continue
        run = PipelineRun(rule.rule, rule.pipeline_id or request.pipeline_id, rule.run_id, rule.url)
        detail = f"the delivery log records run {rule.run_id} for this rule; --force starts a new one"
        outcomes.append(RunOutcome(request, "duplicate", run=run, detail=detail))
    return outcomes, rest


def _reopen_failed(relay: Relay, requests: list[PipelineRunRequest], operator: str) -> list[str]:
    """Reopen refused and poisoned entries: their run never started, the operator wants it now."""
    reopened = []
    for request in requests:
        entry = relay.ledger.get(request.idempotency_key)
        if entry is None or entry.state not in REOPENABLE:
            continue
        # None: a retry or another operator moved it first; dispatch answers what it is now.
        if relay.ledger.reopen(request.idempotency_key, by=operator) is not None:
            reopened.append(request.rule)
    return reopened


def _next_replay_id(relay: Relay, store: DeliveryLogStore, event: RegistryEvent, delivery_id: str) -> str:
    """``<id>~replay-<n>`` for the first ``n`` no replay has used (ledger or log)."""
    rules = [r.rule for r in relay.service.route(event)]
    for n in range(1, MAX_REPLAYS + 1):
        candidate = f"{delivery_id}~replay-{n}"
        used = store.get(candidate) is not None or any(relay.ledger.get(f"{candidate}:{r}") for r in rules)
        if not used:
            return candidate
    raise ValueError(f"delivery {delivery_id!r} was already force-replayed {MAX_REPLAYS} times")

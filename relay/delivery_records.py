"""What the delivery log keeps: one record per verified delivery, one per rule, pure builders.

A record holds the ids an operator asks about (delivery id, model, version, stage or alias),
the answer the sender got, each rule's outcome with its run, and the verified event itself
(normalised, bounded) so it can be replayed. Never a raw body, never a header, never a secret.
Rejected requests are not recorded one by one: they become a counter per reason and hour
(``rejection_reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from relay.answers import RelayResponse, RunOutcome
from relay.ports import EntryState, LedgerEntry
from webhook.errors import AuthenticationFailed, MethodNotAllowed, PayloadInvalid, PayloadTooLarge, StaleEvent
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest

# The verified event is kept for replay up to this size (JSON characters); a table string
# property holds 32 Ki characters, and registry events are far smaller.
MAX_EVENT_CHARS = 16_000
MAX_DETAIL_CHARS = 1000

# The worst rule outcome decides a delivery's status, as it decides the answer.
_STATUS_PRECEDENCE = ("poisoned", "refused", "error", "unavailable", "in_progress", "queued", "triggered", "duplicate")
# Statuses a later, weaker report must not overwrite (a run exists, or an operator must act).
_SETTLED = frozenset({"triggered", "poisoned", "refused"})
_WEAKER_REPORTS = frozenset({"duplicate", "in_progress", "queued", "unavailable"})

# Rejections are counted under a fixed set of reasons: a request can never choose the key.
_REJECTION_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (StaleEvent, "stale"),
    (AuthenticationFailed, "signature"),
    (PayloadInvalid, "malformed"),
    (PayloadTooLarge, "too_large"),
    (MethodNotAllowed, "method"),
)


def rejection_reason(exc: Exception) -> str:
    """The counter a rejected request is counted under (stale, signature, malformed, ...)."""
    for kind, reason in _REJECTION_REASONS:
        if isinstance(exc, kind):
            return reason
    return "other"


def hour_of(at: float) -> str:
    """The UTC hour bucket of a unix time, ``YYYYMMDDHH`` (sorts as text)."""
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%d%H")


@dataclass(frozen=True)
class RuleRecord:
    """One rule's outcome for one delivery; ``status`` is a RunOutcome status or ``poisoned``."""

    rule: str
    status: str
    pipeline_id: int | None = None
    run_id: int | None = None
    url: str | None = None
    detail: str = ""
    origin: str = "webhook"
    forced_by: str = ""
    attempts: int = 0
    updated_at: float = 0.0

    def supersedes(self, stored: RuleRecord) -> bool:
        """Whether this report may replace ``stored`` (reports from several instances race)."""
        if self.updated_at < stored.updated_at:
            return False
        # A repeat that found the run ("duplicate"), or one that came while it was in flight,
        # must not hide that the run was triggered (or that it failed for good); an operator
        # putting a poisoned run back in the queue (a redrive) may.
        if self.forced_by and self.status == "queued":
            return True
        return not (stored.status in _SETTLED and self.status in _WEAKER_REPORTS)

    def as_json(self) -> dict[str, Any]:
        shown = {k: v for k, v in asdict(self).items() if v not in (None, "") or k in ("run_id", "rule", "status")}
        shown["updated_at"] = iso(self.updated_at)
        return shown


@dataclass(frozen=True)
class DeliveryRecord:
    """One verified delivery as the log keeps it."""

    delivery_id: str
    arrived_at: float
    source: str
    event: str
    model: str
    version: str | None
    answer: str  # the status word the sender was answered
    http_status: int
    detail: str = ""
    to_stage: str | None = None
    from_stage: str | None = None
    alias: str | None = None
    rules: tuple[RuleRecord, ...] = ()
    origin: str = "webhook"
    forced_by: str = ""
    replay_of: str = ""
    event_json: str = ""
    first_arrived_at: float = 0.0
    arrivals: int = 1
    replayed_by: str = ""

    @property
    def status(self) -> str:
        """The delivery's status now: the worst of its rules' (the retry queue may have moved
        them on since the answer), or the answer's when no rule matched."""
        statuses = {r.status for r in self.rules}
        return next((s for s in _STATUS_PRECEDENCE if s in statuses), self.answer)

    @property
    def current_detail(self) -> str:
        worst = [r for r in self.rules if r.status == self.status and r.detail]
        joined = "; ".join(dict.fromkeys(r.detail for r in worst))
        return joined or (self.detail if self.answer == self.status else "")

    @property
    def replayable(self) -> bool:
        return bool(self.event_json)

    def registry_event(self) -> RegistryEvent:
        """The verified event, as it was routed. Raises ``ValueError`` when it was not kept."""
        if not self.event_json:
            raise ValueError(f"delivery {self.delivery_id!r} has no stored event to replay")
        try:
            return RegistryEvent.model_validate_json(self.event_json)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ValueError(f"delivery {self.delivery_id!r}: the stored event is unreadable: {problem}") from None

    def with_rule(self, rule: RuleRecord) -> DeliveryRecord:
        others = tuple(r for r in self.rules if r.rule != rule.rule)
        return replace(self, rules=tuple(sorted((*others, rule), key=lambda r: r.rule)))

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` shape: the ids, the status now, the detail, and the runs per rule."""
        return {
            "delivery_id": self.delivery_id,
            "status": self.status,
            "model": self.model,
            "version": self.version,
            "detail": self.current_detail,
            "runs": [r.as_json() for r in self.rules],
            "arrived_at": iso(self.arrived_at),
            "first_arrived_at": iso(self.first_arrived_at or self.arrived_at),
            "arrivals": self.arrivals,
            "source": self.source,
            "event": self.event,
            "to_stage": self.to_stage,
            "from_stage": self.from_stage,
            "alias": self.alias,
            "answer": self.answer,
            "http_status": self.http_status,
            "origin": self.origin,
            "forced_by": self.forced_by,
            "replay_of": self.replay_of,
            "replayed_by": self.replayed_by,
            "replayable": self.replayable,
        }


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds") if at else ""


def bounded_event_json(event: RegistryEvent) -> str:
    """The event's JSON for replay, or ``""`` when it is over ``MAX_EVENT_CHARS``."""
    text = event.model_dump_json()
    return text if len(text) <= MAX_EVENT_CHARS else ""


def rule_record(outcome: RunOutcome, *, now: float, origin: str, forced_by: str = "") -> RuleRecord:
    run = outcome.run
    return RuleRecord(
        rule=outcome.request.rule,
        status=outcome.status,
        pipeline_id=run.pipeline_id if run else outcome.request.pipeline_id,
        run_id=run.run_id if run else None,
        url=run.url if run else None,
        detail=outcome.detail[:MAX_DETAIL_CHARS],
        origin=origin,
        forced_by=forced_by,
        updated_at=now,
    )


def delivery_record(
    event: RegistryEvent,
    outcomes: Sequence[RunOutcome],
    answer: RelayResponse,
    *,
    now: float,
    origin: str = "webhook",
    forced_by: str = "",
    replay_of: str = "",
) -> DeliveryRecord:
    """The record of one delivery after its answer was decided."""
    event_json = bounded_event_json(event)
    detail = str(answer.body.get("detail") or "")
    if not event_json:
        detail = (detail + "; " if detail else "") + "event too large to keep for replay"
    return DeliveryRecord(
        delivery_id=event.delivery_id,
        arrived_at=now,
        source=event.source,
        event=event.event,
        model=event.model_name,
        version=event.version,
        answer=str(answer.body.get("status") or "?"),
        http_status=answer.status,
        detail=detail[:MAX_DETAIL_CHARS],
        to_stage=event.to_stage,
        from_stage=event.from_stage,
        alias=event.alias,
        rules=tuple(
            sorted(
                (rule_record(o, now=now, origin=origin, forced_by=forced_by) for o in outcomes), key=lambda r: r.rule
            )
        ),
        origin=origin,
        forced_by=forced_by,
        replay_of=replay_of,
        event_json=event_json,
        first_arrived_at=now,
    )


def failed_outcomes(requests: Sequence[PipelineRunRequest], answer: RelayResponse) -> list[RunOutcome]:
    """Each matched rule's outcome when the delivery failed as a whole (``answer`` is the error's)."""
    status = "unavailable" if answer.status == 503 else "error"
    return [RunOutcome(r, status, detail=str(answer.body.get("detail") or "")) for r in requests]


_LEDGER_STATUS = {
    EntryState.STARTED: "triggered",
    EntryState.QUEUED: "queued",
    EntryState.REFUSED: "refused",
    EntryState.POISONED: "poisoned",
    EntryState.RELEASED: "unavailable",
    EntryState.CLAIMED: "in_progress",
}


def rule_record_from_entry(entry: LedgerEntry, *, now: float, origin: str) -> RuleRecord:
    """A rule's record as the ledger entry says it stands (after the retry worker acted)."""
    run = entry.run
    request = entry.request
    return RuleRecord(
        rule=entry.key.rpartition(":")[2],
        status=_LEDGER_STATUS[entry.state],
        pipeline_id=run.pipeline_id if run else (request.pipeline_id if request else None),
        run_id=run.run_id if run else None,
        url=run.url if run else None,
        detail=entry.detail[:MAX_DETAIL_CHARS],
        origin=origin,
        forced_by=entry.forced_by,
        attempts=entry.attempts,
        updated_at=now,
    )


def merge_rule(stored: RuleRecord | None, new: RuleRecord) -> RuleRecord:
    """What the log keeps when ``new`` is reported for a rule that has ``stored``."""
    if stored is None:
        return new
    if not new.supersedes(stored):
        return stored
    # Who last acted on it by hand (a redrive, a replay) stays known after the worker reports.
    return replace(new, attempts=max(new.attempts, stored.attempts), forced_by=new.forced_by or stored.forced_by)


def merge_delivery(stored: DeliveryRecord | None, new: DeliveryRecord) -> DeliveryRecord:
    """What the log keeps when the same delivery id arrives again (a sender's retry, a replay).

    The first arrival's origin and event stay; the latest arrival's answer shows; each rule
    keeps its strongest report (``RuleRecord.supersedes``).
    """
    if stored is None:
        return new
    rules = {r.rule: r for r in stored.rules}
    for rule in new.rules:
        rules[rule.rule] = merge_rule(rules.get(rule.rule), rule)
    # A stub (the rule report came first) never outranks the delivery's own record.
    latest = new if new.arrived_at >= stored.arrived_at or stored.arrivals == 0 else stored
    return replace(
        latest,
        first_arrived_at=min(stored.first_arrived_at or stored.arrived_at, new.arrived_at),
        arrivals=stored.arrivals + new.arrivals,
        origin=stored.origin,
        forced_by=stored.forced_by,
        replay_of=stored.replay_of,
        event_json=stored.event_json or new.event_json,
        rules=tuple(sorted(rules.values(), key=lambda r: r.rule)),
        replayed_by=new.forced_by if new.origin == "replay" and new.forced_by else stored.replayed_by,
    )


def stub_record(delivery_id: str, *, model: str, version: str | None, now: float) -> DeliveryRecord:
    """A record for a rule report whose delivery was never logged (the log was down then)."""
    return DeliveryRecord(
        delivery_id=delivery_id,
        arrived_at=now,
        source="?",
        event="?",
        model=model or "?",
        version=version,
        answer="?",
        http_status=0,
        arrivals=0,
        detail="the delivery's own record was not written (delivery log unavailable then)",
    )

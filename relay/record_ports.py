"""The ports of what the relay records about deliveries: the delivery log and the state gate.

Apart from ``relay.ports`` because they exchange the answer's values (``relay.answers``) and the
log's records (``relay.delivery_records``), which themselves build on the ports. Implemented by
``relay.delivery_log`` and ``relay.state_gate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from relay.answers import RelayResponse, RunOutcome
from relay.delivery_records import RuleRecord
from webhook.events import RegistryEvent
from webhook.routing import PipelineRunRequest


class DeliveryLog(Protocol):
    """Every verified delivery, what was decided, and what came of each rule's run.

    Best effort by contract: no method raises or waits for storage. A log outage is logged
    and counted, never an outage of the relay.
    """

    def delivered(
        self,
        event: RegistryEvent,
        outcomes: Sequence[RunOutcome],
        answer: RelayResponse,
        *,
        origin: str = "webhook",
        forced_by: str = "",
        replay_of: str = "",
    ) -> None: ...

    def rule_changed(self, delivery_id: str, rule: RuleRecord, *, model: str = "", version: str | None = None) -> None:
        """A rule's outcome moved on after the answer (the retry queue, an operator, catch-up)."""
        ...

    def rejected(self, reason: str) -> None:
        """Count one rejected request (never stored one by one)."""
        ...

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was handed over is written; False when ``timeout`` ran out."""
        ...


class StateGate(Protocol):
    """Screens a stage or alias event against the state catch-up already started.

    Returns the outcomes decided without a run (a late delivery of a state catch-up handled)
    and the requests to dispatch. Raises ``StorageUnavailable``.
    """

    def screen(
        self, event: RegistryEvent, requests: Sequence[PipelineRunRequest]
    ) -> tuple[list[RunOutcome], list[PipelineRunRequest]]: ...

"""The ports: what the request service needs from the world, and the values they exchange.

Adapters implement these protocols (``devops.client`` the starter, ``relay.table_ledger`` and
``relay.ledger`` the ledger, ``relay.retry_queue`` the queues, ``relay.keyvault`` and
``relay.secrets`` the secret sources; the delivery log's and the state gate's are in
``relay.record_ports``); the service and the retry worker import nothing else of them. The
errors an adapter may raise are defined here too (see the tree in ``webhook.errors``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Protocol

from webhook.errors import RelayError
from webhook.routing import PipelineRunRequest

# -- errors ------------------------------------------------------------------------------


class PipelineRejected(RelayError):
    """Azure DevOps answered, and refused: retrying the same request will not help.

    Answered 424 (Failed Dependency): a status neither MLflow nor a generic sender retries.
    """

    status = HTTPStatus.FAILED_DEPENDENCY


class ClaimLost(RelayError):
    """A conditional ledger write found the entry moved on: another attempt holds it now."""


class DependencyUnavailable(RelayError):
    """A dependency is down or throttling; the sender should retry after ``retry_after`` s."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(
        self, detail: str, *, retry_after: int = 30, ambiguous: bool = False, server_retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
        # True when a run may have been created although no answer said so.
        self.ambiguous = ambiguous
        # What the dependency itself asked for (its Retry-After), if anything: the retry queue
        # honours this, not ``retry_after``, which is the relay's hint to the sender.
        self.server_retry_after = server_retry_after


class DevOpsUnavailable(DependencyUnavailable):
    """Azure DevOps is throttling, failing or unreachable."""


class SecretsUnavailable(DependencyUnavailable):
    """Key Vault or the managed identity cannot be reached or refused."""


class StorageUnavailable(DependencyUnavailable):
    """The delivery ledger or the retry queue cannot be reached."""


# -- time ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """An absolute point on a monotonic clock that every step of one attempt shares."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()


# -- Azure DevOps -------------------------------------------------------------------------


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
    """Starts pipeline runs (the Azure DevOps client, or the dry-run starter)."""

    def start(self, request: PipelineRunRequest, *, deadline: Deadline) -> PipelineRun:
        """Start one run before ``deadline``.

        Raises:
            PipelineRejected, DevOpsUnavailable, SecretsUnavailable.
        """
        ...

    def find_started(self, request: PipelineRunRequest, *, since: float, deadline: Deadline) -> PipelineRun | None:
        """The run this request started since ``since``, if any. Raises ``DevOpsUnavailable``."""
        ...


# -- the delivery ledger --------------------------------------------------------------------


class EntryState(StrEnum):
    CLAIMED = "claimed"  # an attempt is starting the run right now (lease)
    QUEUED = "queued"  # handed to the retry queue, which owns it
    STARTED = "started"  # the run exists: run_id is set
    REFUSED = "refused"  # Azure DevOps refused it; repeats answer the same, an operator may replay
    RELEASED = "released"  # nothing started and nothing queued: a repeat may claim it
    POISONED = "poisoned"  # the retry queue gave up; in the poison queue for an operator


@dataclass(frozen=True)
class LedgerEntry:
    """One (delivery id, rule) as stored."""

    key: str
    state: EntryState
    updated_at: float  # unix seconds of the last write
    claimed_at: float = 0.0  # the current holder's claim
    first_claimed_at: float = 0.0  # the first claim ever: runs started since then may be ours
    run: PipelineRun | None = None
    detail: str = ""
    request: PipelineRunRequest | None = None  # the verified request, for the retry queue
    attempts: int = 0  # retry-queue attempts so far
    forced_by: str = ""  # who replayed it on purpose (operator commands)


@dataclass(frozen=True)
class Claim:
    """Proof of holding an entry; every later write of the holder is conditional on ``etag``.

    ``fresh`` is True for the first claim ever of this key: no earlier attempt can have
    started its run, so nothing needs to be looked for.
    """

    key: str
    etag: str
    claimed_at: float
    first_claimed_at: float
    request: PipelineRunRequest
    fresh: bool
    attempts: int = 0


@dataclass(frozen=True)
class ClaimResult:
    """``claim`` is set when the caller now holds the key; ``entry`` is the stored entry."""

    entry: LedgerEntry
    claim: Claim | None = None

    @property
    def won(self) -> bool:
        return self.claim is not None


class DeliveryLedger(Protocol):
    """One entry per ``PipelineRunRequest.idempotency_key``.

    Raises ``StorageUnavailable`` from every method; ``record`` raises ``ClaimLost`` when the
    claim it carries is no longer the entry's holder.
    """

    @property
    def lease(self) -> float:
        """How long a claim keeps other attempts out (seconds)."""
        ...

    def claim(self, request: PipelineRunRequest) -> ClaimResult: ...

    def claim_for_retry(self, key: str) -> ClaimResult | None:
        """Claim a queued (or released, or expired) entry; ``None`` when it does not exist."""
        ...

    def get(self, key: str) -> LedgerEntry | None: ...

    def record(
        self,
        claim: Claim,
        state: EntryState,
        *,
        run: PipelineRun | None = None,
        detail: str = "",
        attempts: int | None = None,
    ) -> Claim: ...

    def reopen(self, key: str, *, by: str) -> LedgerEntry | None:
        """Release a refused or poisoned entry on an operator's word: the released entry, or
        None, changing nothing, when the entry is neither (another attempt or operator moved
        it first) or is gone."""
        ...


# -- the retry queue ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryTicket:
    """A retry message: a reference to a ledger entry, never a request.

    Only ``key`` is acted on: the worker reads the verified request from the ledger, so a
    message written by anyone else can at most retry a delivery the relay already verified.
    The other fields make a message (and its poison copy) readable by an operator.
    """

    key: str
    delivery_id: str
    model: str
    version: str | None
    rule: str
    attempt: int
    last_error: str = ""

    @classmethod
    def for_request(cls, request: PipelineRunRequest, *, attempt: int, last_error: str) -> RetryTicket:
        return cls(
            key=request.idempotency_key,
            delivery_id=request.delivery_id,
            model=request.model_name,
            version=request.version,
            rule=request.rule,
            attempt=attempt,
            last_error=last_error[:500],
        )

    def to_json(self) -> str:
        return json.dumps({"v": 2, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> RetryTicket:
        """Raises ``ValueError`` for anything but a well-formed ticket."""
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("v") != 2 or not isinstance(document.get("key"), str):
            raise ValueError("not a relay retry ticket")
        try:
            return cls(
                key=document["key"],
                delivery_id=str(document["delivery_id"]),
                model=str(document["model"]),
                version=document.get("version"),
                rule=str(document["rule"]),
                attempt=int(document["attempt"]),
                last_error=str(document.get("last_error", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"retry ticket field missing: {exc}") from None


class RetryQueue(Protocol):
    """Durable hand-off of a run that could not be started in time. Raises ``StorageUnavailable``."""

    def enqueue(self, ticket: RetryTicket, *, delay: float) -> None: ...


class PoisonQueue(Protocol):
    """Where a run the relay gave up on is parked for an operator. Raises ``StorageUnavailable``."""

    def poison(self, ticket: RetryTicket | None, *, reason: str, raw: str = "") -> None: ...


# -- secrets ----------------------------------------------------------------------------------


class SecretSource(Protocol):
    """Reads one secret by name; ``None`` when it does not exist. Raises ``SecretsUnavailable``."""

    description: str

    def get(self, name: str) -> str | None: ...

"""Time budgets that add up: the lease, the request deadline, storage calls and the queue.

One attempt (HTTP request or retry message) stamps its claim, spends at most the Azure DevOps
deadline (the check for an already started run included), then records the outcome. The lease
must outlast all of it, so no attempt outlives its claim; the queue's ``visibilityTimeout``
must outlast the lease, so the host's redelivery of a failed retry meets an expired claim
and takes it over instead of waiting behind it. Derived here once, checked when settings load.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.errors import ConfigurationError


@dataclass(frozen=True)
class FixedDurations:
    """The durations no setting names: the storage SDKs' own timeouts and retries, and clock slack.

    Production always uses the defaults. The loopback fault suite compresses them together
    with host.json's queue timeouts (``standins/timescale.py``), so the relay's own arithmetic
    (lease, checks, started-run window) runs unchanged on shorter, really enforced numbers.
    """

    storage_connect_timeout: float = 2.0
    storage_read_timeout: float = 4.0
    storage_retry_total: int = 1
    storage_retry_backoff: float = 0.2
    # Instances compare wall clocks (the claim's time against their own): allow for skew.
    clock_slack: float = 5.0

    @property
    def storage_call(self) -> float:
        """Worst case of one storage call, SDK retries included: (1 + retries) x (connect + read) + backoff."""
        attempts = 1 + self.storage_retry_total
        return attempts * (self.storage_connect_timeout + self.storage_read_timeout) + (
            self.storage_retry_backoff * self.storage_retry_total
        )

    def storage_client_options(self) -> dict[str, Any]:
        """Keyword arguments for the storage SDK clients that enforce these bounds."""
        return {
            "retry_total": self.storage_retry_total,
            "retry_backoff_factor": self.storage_retry_backoff,
            "connection_timeout": self.storage_connect_timeout,
            "read_timeout": self.storage_read_timeout,
        }


_fixed = FixedDurations()


def fixed_durations() -> FixedDurations:
    """The fixed durations in force (read at use, never at import)."""
    return _fixed


def use_fixed_durations(durations: FixedDurations) -> FixedDurations:
    """Put ``durations`` in force for clients and budgets built from now on; returns the previous ones.

    Only the dev-only loopback harness calls this (time compression); see ``FixedDurations``.
    """
    global _fixed
    previous, _fixed = _fixed, durations
    return previous


# A request that needs a secret waits at most this long for the vault (its answer is due within 2 s).
SECRET_WAIT_SECONDS = 1.5
# A failed vault read is remembered (answered 503 at once) for this long.
SECRET_FAILURE_MEMORY_SECONDS = 10.0
# A cached Entra token is used until this long before it expires, then fetched anew.
TOKEN_REFRESH_MARGIN_SECONDS = 300

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


@dataclass(frozen=True)
class TimeBudgets:
    """Every duration one attempt may take, in seconds."""

    deadline: float  # Azure DevOps: the started-run check and every POST retry
    lease: float  # how long a claim keeps other attempts out
    visibility_timeout: float  # host.json queues.visibilityTimeout: the host's redelivery delay

    def describe(self) -> str:
        fixed = fixed_durations()
        return (
            f"lease {self.lease:.1f} s = deadline {self.deadline:g} s + 2 storage calls x "
            f"{fixed.storage_call:g} s + {fixed.clock_slack:g} s clock slack; "
            f"queue visibilityTimeout {self.visibility_timeout:g} s"
        )


def derive_budgets(*, deadline: float, visibility_timeout: float) -> TimeBudgets:
    """The lease that follows from ``deadline``, checked against the queue's visibility timeout.

    Raises:
        ConfigurationError: the lease would outlast the visibility timeout.
    """
    fixed = fixed_durations()
    lease = deadline + 2 * fixed.storage_call + fixed.clock_slack
    budgets = TimeBudgets(deadline=deadline, lease=lease, visibility_timeout=visibility_timeout)
    if lease > visibility_timeout:
        longest = visibility_timeout - 2 * fixed.storage_call - fixed.clock_slack
        raise ConfigurationError(
            f"setting DEVOPS_DEADLINE_SECONDS={deadline:g} makes the ledger lease {lease:.1f} s, longer than the "
            f"retry queue's visibilityTimeout ({visibility_timeout:g} s in host.json): lower the deadline to at "
            f"most {max(math.floor(longest), 0)} s or raise visibilityTimeout"
        )
    return budgets


def parse_timespan(text: str) -> float:
    """Seconds in a .NET timespan as host.json writes it (``[d.]hh:mm:ss``). Raises ``ValueError``."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ValueError(f"not a timespan: {text!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass(frozen=True)
class HostQueueSettings:
    """What host.json tells the queue extension (its defaults where it is silent)."""

    visibility_timeout: float = 0.0  # a failed message is visible again at once
    max_dequeue_count: int = 5


def host_queue_settings(host_json: Path) -> HostQueueSettings | None:
    """``extensions.queues`` from host.json (``None`` when there is no host.json).

    Raises:
        ConfigurationError: host.json cannot be read or a value is malformed.
    """
    try:
        document: Any = json.loads(host_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{host_json.name} cannot be read: {exc}") from None
    queues = (document.get("extensions") or {}).get("queues") or {}
    try:
        visibility = parse_timespan(str(queues.get("visibilityTimeout", "00:00:00")))
        return HostQueueSettings(visibility, int(queues.get("maxDequeueCount", 5)))
    except ValueError:
        raise ConfigurationError(f"{host_json.name}: extensions.queues has a malformed value") from None

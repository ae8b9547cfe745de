"""Time budgets that add up: the lease, the request deadline, storage calls and the queue.

One attempt (HTTP request or retry message) stamps its claim, spends at most the Azure DevOps
deadline (the check for an already started run included), then records the outcome. The lease
must outlast all of it, so no attempt outlives its claim; the queue's ``visibilityTimeout``
must outlast the lease, so the host's redelivery of a failed retry meets an expired claim
and takes it over instead of waiting behind it. Derived here once, checked when settings load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.errors import ConfigurationError

# The storage and Key Vault SDKs' own retry policies, bounded so they fit inside the budgets.
STORAGE_CONNECT_TIMEOUT = 2.0
STORAGE_READ_TIMEOUT = 4.0
STORAGE_RETRY_TOTAL = 1
STORAGE_RETRY_BACKOFF = 0.2
# Worst case of one storage call, its SDK retries included: (1 + retries) x (connect + read) + backoff.
STORAGE_CALL_SECONDS = (1 + STORAGE_RETRY_TOTAL) * (STORAGE_CONNECT_TIMEOUT + STORAGE_READ_TIMEOUT) + (
    STORAGE_RETRY_BACKOFF * STORAGE_RETRY_TOTAL
)
# Instances compare wall clocks (the claim's time against their own): allow for skew.
CLOCK_SLACK_SECONDS = 5.0
# A request that needs a secret waits at most this long for the vault (its answer is due within 2 s).
SECRET_WAIT_SECONDS = 1.5
# A failed vault read is remembered (answered 503 at once) for this long.
SECRET_FAILURE_MEMORY_SECONDS = 10.0

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


@dataclass(frozen=True)
class TimeBudgets:
    """Every duration one attempt may take, in seconds."""

    deadline: float  # Azure DevOps: the started-run check and every POST retry
    lease: float  # how long a claim keeps other attempts out
    visibility_timeout: float  # host.json queues.visibilityTimeout: the host's redelivery delay

    def describe(self) -> str:
        return (f"lease {self.lease:.1f} s = deadline {self.deadline:g} s + 2 storage calls x "
                f"{STORAGE_CALL_SECONDS:g} s + {CLOCK_SLACK_SECONDS:g} s clock slack; "
                f"queue visibilityTimeout {self.visibility_timeout:g} s")


def derive_budgets(*, deadline: float, visibility_timeout: float) -> TimeBudgets:
    """The lease that follows from ``deadline``, checked against the queue's visibility timeout.

    Raises:
        ConfigurationError: the lease would outlast the visibility timeout.
    """
    lease = deadline + 2 * STORAGE_CALL_SECONDS + CLOCK_SLACK_SECONDS
    budgets = TimeBudgets(deadline=deadline, lease=lease, visibility_timeout=visibility_timeout)
    if lease > visibility_timeout:
        longest = visibility_timeout - 2 * STORAGE_CALL_SECONDS - CLOCK_SLACK_SECONDS
        raise ConfigurationError(
            f"setting DEVOPS_DEADLINE_SECONDS={deadline:g} makes the ledger lease {lease:.1f} s, longer than the "
            f"retry queue's visibilityTimeout ({visibility_timeout:g} s in host.json): lower the deadline to at "
            f"most {max(longest, 0):.0f} s or raise visibilityTimeout"
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

"""Time compression for the loopback fault suite: the same budgets, on a shorter clock.

What is compressed, all by one ``factor`` (0.1: a minute becomes six seconds):

* host.json's queue timings, in a copy of this repository's host.json that both sides read:
  ``visibilityTimeout`` (60 s → 6 s), ``maxPollingInterval`` and ``functionTimeout``; the
  queue driver (``standins.functions_queue``) and the relay (``relay.settings.host_json_path``,
  through ``AzureWebJobsScriptRoot``, which the Functions host honours as its script root)
  read that one file, so the relay's check "lease ≤ visibilityTimeout" compares the numbers the
  driver enforces. ``batchSize``, ``newBatchThreshold`` and ``maxDequeueCount`` are kept.
* the relay's fixed durations (``relay.budgets.FixedDurations``): the storage SDKs' connect and
  read timeouts, their retry backoff and the clock slack. The SDK clients really enforce the
  shorter timeouts, so "one storage call takes at most ``storage_call`` seconds" stays true.

What is not compressed: every *setting* keeps its meaning and is chosen per scenario
(``DEVOPS_DEADLINE_SECONDS``, ``RETRY_BASE_DELAY_SECONDS`` ≥ 1 s, ``RETRY_MAX_ATTEMPTS``), and
the relay derives its lease from them and from the compressed fixed durations with its own
arithmetic (``relay.budgets.derive_budgets``). Key Vault's contract numbers (503 within 2 s,
failures remembered 10 s) are not compressed. Azure Storage queue visibility is whole
seconds, so the factor must keep 60 s whole (0.1, 0.2, 0.5, 1).

Why it is faithful: exactly-once here rests on orderings (a claim's lease ends before the
host redelivers; a holder's last POST happens before its lease ends; a queued run is recorded
before its ticket becomes visible), and each ordering compares durations that are all
compressed by the same factor, or bounded by a setting the relay checks at load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.budgets import FixedDurations, HostQueueSettings, host_queue_settings, parse_timespan, use_fixed_durations

REPO_HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
SCRIPT_ROOT_VARIABLE = "AzureWebJobsScriptRoot"


def format_timespan(seconds: float) -> str:
    """``hh:mm:ss`` as host.json writes a timespan (whole seconds)."""
    whole = round(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass(frozen=True)
class TimeScale:
    """One compression factor for the host's timings and the relay's fixed durations."""

    factor: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.factor <= 1 or abs(60 * self.factor - round(60 * self.factor)) > 1e-9:
            raise ValueError(f"time factor {self.factor} must be in (0, 1] and keep 60 s whole")

    def fixed_durations(self, base: FixedDurations | None = None) -> FixedDurations:
        base = base or FixedDurations()
        f = self.factor
        return FixedDurations(
            storage_connect_timeout=base.storage_connect_timeout * f,
            storage_read_timeout=base.storage_read_timeout * f,
            storage_retry_total=base.storage_retry_total,
            storage_retry_backoff=base.storage_retry_backoff * f,
            clock_slack=base.clock_slack * f,
        )

    def seconds(self, real_seconds: float) -> float:
        """A duration of the real host or relay, on this clock."""
        return real_seconds * self.factor

    def longest_deadline(self) -> float:
        """The longest ``DEVOPS_DEADLINE_SECONDS`` whose lease still fits the compressed visibilityTimeout."""
        visibility = parse_timespan(self.host_json()["extensions"]["queues"]["visibilityTimeout"])
        fixed = self.fixed_durations()
        return visibility - 2 * fixed.storage_call - fixed.clock_slack

    def host_json(self, original: Path = REPO_HOST_JSON) -> dict[str, Any]:
        """``original`` host.json with its queue and function timeouts compressed."""
        document: dict[str, Any] = json.loads(original.read_text(encoding="utf-8"))
        queues = document.setdefault("extensions", {}).setdefault("queues", {})
        for name in ("visibilityTimeout", "maxPollingInterval"):
            if name in queues:
                queues[name] = format_timespan(parse_timespan(str(queues[name])) * self.factor)
        if "functionTimeout" in document:
            document["functionTimeout"] = format_timespan(parse_timespan(document["functionTimeout"]) * self.factor)
        return document


@dataclass(frozen=True)
class CompressedHost:
    """Where the compressed host.json is, and what it says."""

    script_root: Path
    scale: TimeScale

    @property
    def host_json(self) -> Path:
        return self.script_root / "host.json"

    @property
    def queues(self) -> HostQueueSettings:
        found = host_queue_settings(self.host_json)
        assert found is not None
        return found

    def queue_option(self, name: str, default: float) -> float:
        """A value of ``extensions.queues`` (timespans in seconds)."""
        document = json.loads(self.host_json.read_text(encoding="utf-8"))
        value = ((document.get("extensions") or {}).get("queues") or {}).get(name)
        if value is None:
            return default
        return parse_timespan(value) if isinstance(value, str) else float(value)


@contextmanager
def compressed_time(scale: TimeScale, workdir: Path) -> Iterator[CompressedHost]:
    """Put ``scale`` in force for the relay built inside the block (restored afterwards).

    Writes the compressed host.json under ``workdir``, points ``AzureWebJobsScriptRoot`` at it
    and puts the compressed fixed durations in force for clients built from now on.
    """
    root = workdir / "script-root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "host.json").write_text(json.dumps(scale.host_json(), indent=2), encoding="utf-8")
    saved_root = os.environ.get(SCRIPT_ROOT_VARIABLE)
    os.environ[SCRIPT_ROOT_VARIABLE] = str(root)
    previous = use_fixed_durations(scale.fixed_durations())
    try:
        yield CompressedHost(root, scale)
    finally:
        use_fixed_durations(previous)
        if saved_root is None:
            os.environ.pop(SCRIPT_ROOT_VARIABLE, None)
        else:
            os.environ[SCRIPT_ROOT_VARIABLE] = saved_root

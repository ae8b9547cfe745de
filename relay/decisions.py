"""One structured log line per decision, carrying correlation ids and never a body or secret.

The fields go both into the message (``key=value``, searchable in Application Insights
``traces`` as plain text) and into ``extra`` (structured, for handlers that keep it). A value
that is not a plain token (it may come from an unauthenticated request) is quoted with
``repr``, so it can neither forge a ``key=value`` field nor break the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

log = logging.getLogger("relay")

# Every decision a line can carry, roughly in the order a delivery meets them. The README and
# docs/deploy.md list exactly these, and every decision the code logs is one of them
# (tests/relay/test_decisions_documented.py checks both).
DECISIONS: tuple[str, ...] = (
    "received",
    "verified",
    "ignored",
    "matched",
    "triggered",
    "duplicate",
    "queued",
    "in_progress",
    "refused",
    "rejected",
    "unavailable",
    "requeued",
    "deferred",
    "done",
    "poisoned",
    "claim_lost",
    "unrecorded",
    "log_unavailable",
    "caught_up",
    "catch_up_failed",
    "misconfigured",
    "crashed",
)

_FIELDS = ("delivery_id", "source", "event", "model", "version", "rule", "pipeline_id", "run_id", "status", "error_id")
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,200}$")


def quoted(value: object) -> str:
    """``value`` as it may appear in a log line: plain tokens as they are, anything else repr'd."""
    text = str(value)
    return text if _PLAIN.match(text) else repr(text[:200])


def log_decision(
    decision: str,
    ids: Mapping[str, object] | None = None,
    /,
    *,
    level: int = logging.INFO,
    detail: str = "",
    **fields: object,
) -> None:
    """Log ``decision`` (received, verified, matched, triggered, queued, duplicate, failed, ...).

    ``ids`` holds the correlation ids of the delivery/run; ``fields`` adds or overrides some.
    """
    if not log.isEnabledFor(level):
        return  # building the line costs ~20 µs; skip it when the level is filtered out
    merged = {**(ids or {}), **fields}
    known = {k: merged[k] for k in _FIELDS if merged.get(k) not in (None, "")}
    text = " ".join(f"{k}={quoted(v)}" for k, v in known.items())
    message = f"relay decision={decision} {text}".rstrip()
    if detail:
        message += f" detail={detail[:1000]!r}"
    log.log(level, message, extra={"relay_decision": decision, **{f"relay_{k}": v for k, v in known.items()}})

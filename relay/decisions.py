"""One structured log line per decision, carrying correlation ids and never a body or secret.

The fields go both into the message (``key=value``, searchable in Application Insights
``traces`` as plain text) and into ``extra`` (structured, for handlers that keep it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("relay")

_FIELDS = ("delivery_id", "source", "event", "model", "version", "rule", "pipeline_id", "run_id", "status")


def log_decision(
    decision: str, ids: Mapping[str, object] | None = None, /, *,
    level: int = logging.INFO, detail: str = "", **fields: object,
) -> None:  # fmt: skip
    """Log ``decision`` (received, verified, matched, triggered, queued, duplicate, failed, ...).

    ``ids`` holds the correlation ids of the delivery/run; ``fields`` adds or overrides some.
    """
    if not log.isEnabledFor(level):
        return  # building the line costs ~20 µs; skip it when the level is filtered out
    merged = {**(ids or {}), **fields}
    known = {k: merged[k] for k in _FIELDS if merged.get(k) not in (None, "")}
    text = " ".join(f"{k}={v}" for k, v in known.items())
    message = f"relay decision={decision} {text}".rstrip()
    if detail:
        message += f" detail={detail!r}"
    log.log(level, message, extra={"relay_decision": decision, **{f"relay_{k}": v for k, v in known.items()}})

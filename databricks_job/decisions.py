"""Is the event that started this run still true? Pure functions, no registry access.

Deliveries can arrive out of order and pipelines can queue: by the time the job runs, the
version may have left the stage, or the alias may point elsewhere. Deploying then would
roll the registry's intent backwards, so a superseded event stops (successfully) instead.
"""

from __future__ import annotations


def superseded_reason(
    *,
    version: str,
    expected_stage: str,
    current_stage: str | None,
    alias: str,
    alias_version: str | None,
) -> str | None:
    """Explain why the event no longer holds, or return ``None`` when it still does.

    Args:
        version: the version the event named.
        expected_stage: the stage the event moved it to ("" when the event names none).
        current_stage: the version's stage now (``None`` in Unity Catalog, which has no stages).
        alias: the alias the event set ("" when none).
        alias_version: the version the alias points to now (``None`` when the alias is gone).
    """
    if expected_stage and (current_stage or "").casefold() != expected_stage.casefold():
        return (
            f"version {version} is no longer in {expected_stage} (now {current_stage or 'None'}); "
            "a later transition superseded this event"
        )
    if alias and alias_version != version:
        now = f"points to version {alias_version}" if alias_version else "no longer exists"
        return f"alias {alias!r} {now}, not version {version}; a later change superseded this event"
    return None

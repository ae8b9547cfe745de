"""The plan ``mlflow-relay sync`` prints as a diff, and carries out unless it is a dry run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

_VERBS = {
    "create": ("+", "create", "created"),
    "update": ("~", "update", "updated"),
    "unchanged": ("=", "unchanged", "unchanged"),
    "extra": ("-", "delete", "deleted"),
}


@dataclass(frozen=True)
class Change:
    """One line of the plan, and how to carry it out (``extra``: the delete ``--prune`` runs)."""

    verb: str  # create | update | unchanged | extra
    what: str
    detail: str = ""
    apply: Callable[[], object] | None = None


def carry_out(changes: list[Change], *, dry_run: bool, prune: bool, out: TextIO) -> None:
    """Print each change as a diff line and, unless ``dry_run``, apply it; then the summary line."""
    done = {"create": 0, "update": 0, "extra": 0}
    for change in changes:
        sign, verb, past = _VERBS[change.verb]
        acts = change.verb in ("create", "update") or (change.verb == "extra" and prune)
        if change.verb == "extra" and not prune:
            shown = "not needed (kept; --prune deletes it)"
        elif dry_run and acts:
            shown = f"would {verb}"
        else:
            shown = past
        if acts and not dry_run and change.apply is not None:
            change.apply()
        if acts:
            done[change.verb] += 1
        out.write(f"{sign} {shown} {change.what}" + (f"  {change.detail}" if change.detail else "") + "\n")
    counts = f"{done['create']} to create, {done['update']} to update, {done['extra']} to delete"
    if not any(done.values()):
        out.write("dry run: no change needed\n" if dry_run else "no change\n")
    elif dry_run:
        out.write(f"dry run: {counts}; nothing was changed\n")
    else:
        out.write(f"{done['create']} created, {done['update']} updated, {done['extra']} deleted\n")

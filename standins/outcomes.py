"""How every event x rule ended, and the figures of a scenario: the exactly-once property, counted.

An event x rule (a delivery id and the pipeline one of its rules starts) must end as exactly
one run in Azure DevOps, or as one poison message (``relay-retry-poison``) together with an
ERROR line naming its model version — never zero silently, never two. ``account`` reads the
DevOps stand-in's runs, the poison queue and the relay's log records, and classifies each.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from standins.harness import RULES, Answer, Delivery, RelayHarness

OK_KINDS = ("one run", "one poison + ERROR")
BAD_KINDS = ("lost", "doubled", "poison without ERROR", "poisoned twice", "run and poison")


@dataclass
class Figures:
    """What one scenario sent, which faults it met, and how each event x rule ended."""

    scenario: str
    events: int = 0
    keys: int = 0
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    poisons: int = 0
    sender_gave_up: int = 0
    delivery_ids: list[str] = field(default_factory=list)
    stories: dict[str, list[str]] = field(default_factory=dict)  # the log of each event x rule that went wrong
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def lost(self) -> int:
        return self.endings["lost"]

    @property
    def doubled(self) -> int:
        return self.endings["doubled"]

    @property
    def violations(self) -> int:
        return sum(self.endings[k] for k in BAD_KINDS) + self.sender_gave_up

    def record(self, answers: list[Answer], *, final: bool = True) -> list[Answer]:
        """Count a sender's answers; ``final``: it sent no more, so a last 5xx means it gave up."""
        with self._lock:  # senders record from their own threads
            self.sent += len(answers)
            self.answers.update(a.label for a in answers)
            if final and answers and answers[-1].status >= 500:
                self.sender_gave_up += 1
        return answers


def _poison_lines(harness: RelayHarness) -> set[tuple[str, str, str]]:
    """(delivery id, rule, version) of every ERROR ``poisoned`` line."""
    found = set()
    for record in harness.logs.decisions("poisoned", level=logging.ERROR):
        ids = (
            str(getattr(record, "relay_delivery_id", "")),
            str(getattr(record, "relay_rule", "")),
            str(getattr(record, "relay_version", "")),
        )
        if f"version {ids[2]} was NOT deployed" in record.getMessage():
            found.add(ids)
    return found


def ending(runs: int, poisons: int, error_line: bool) -> str:
    """The class of one event x rule's ending."""
    if runs == 0 and poisons == 0:
        return "lost"
    if runs > 1:
        return "doubled"
    if runs == 1:
        return "run and poison" if poisons else "one run"
    if poisons > 1:
        return "poisoned twice"
    return "one poison + ERROR" if error_line else "poison without ERROR"


def account(harness: RelayHarness, deliveries: list[Delivery], figures: Figures) -> Figures:
    """Classify every event x rule of ``deliveries`` and fill in runs, poisons and faults."""
    runs = Counter((r.template_parameters.get("delivery_id", ""), r.pipeline_id) for r in harness.standin.runs)
    poisons = Counter(str(p.get("key", "")) for p in harness.poison_messages())
    lines = _poison_lines(harness)
    expected = {key: d for d in deliveries for key in d.keys}
    figures.events, figures.keys = len(deliveries), len(expected)
    figures.delivery_ids = [d.delivery_id for d in deliveries]
    for (delivery_id, pipeline), delivery in expected.items():
        rule = RULES[pipeline]
        kind = ending(
            runs[(delivery_id, pipeline)],
            poisons[f"{delivery_id}:{rule}"],
            (delivery_id, rule, delivery.version) in lines,
        )
        figures.endings[kind] += 1
        if kind in BAD_KINDS:
            figures.notes.append(f"{kind}: delivery {delivery_id} rule {rule}")
            figures.stories[f"{delivery_id} {rule}"] = story(harness, delivery_id, rule)
    figures.runs = sum(runs.values())
    figures.poisons = sum(poisons.values())
    figures.notes.extend(f"unexpected run {key}" for key in runs if key not in expected)
    figures.faults.update(harness.standin.injected)
    figures.faults.update(harness.storage.injected)
    if harness.host is not None:
        stats = harness.host.stats
        if stats.results_lost:
            figures.faults["host lost a completed result"] += stats.results_lost
        figures.notes.append(
            f"queue host: {stats.invocations} invocations, {stats.failed} raised, "
            f"{stats.poisoned_by_host} moved to poison by the host"
        )
    return figures


def story(harness: RelayHarness, delivery_id: str, rule: str, *, limit: int = 60) -> list[str]:
    """The relay's log lines about one delivery's ``rule`` (and the delivery as a whole), in order."""
    records = [r for r in harness.logs.records if delivery_id in r.getMessage()]
    start = records[0].created if records else 0.0
    lines = [
        f"{r.created - start:7.2f} {r.threadName[:20]:20} {r.levelname:7} {r.getMessage()[:300]}"
        for r in records
        if f"rule={rule}" in r.getMessage() or "rule=" not in r.getMessage()
    ]
    return lines[:limit]


def format_table(rows: list[Figures]) -> str:
    """The figures as a fixed-width table, then each scenario's faults and notes."""
    header = ("scenario", "events", "event x rule", "runs", "poisons", "lost", "doubled", "other bad", "sent", "wall s")
    lines = [
        [
            f.scenario,
            str(f.events),
            str(f.keys),
            str(f.runs),
            str(f.poisons),
            str(f.lost),
            str(f.doubled),
            str(f.violations - f.lost - f.doubled),
            str(f.sent),
            f"{f.wall_seconds:.1f}",
        ]
        for f in rows
    ]
    widths = [max(len(row[i]) for row in [list(header), *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines)
    for f in rows:
        out.append(f"  [{f.scenario}] endings: " + ", ".join(f"{k} {v}" for k, v in sorted(f.endings.items())))
        if f.faults:
            out.append(
                f"  [{f.scenario}] faults injected: " + ", ".join(f"{k} x{v}" for k, v in sorted(f.faults.items()))
            )
        out.append(f"  [{f.scenario}] answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(f.answers.items())))
        out.extend(f"  [{f.scenario}] {note}" for note in f.notes)
    return "\n".join(out)

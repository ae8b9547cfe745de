"""The fault suite's figures: every failure of issue 12, and random mixes of all of them.

    .venv/bin/python bench/fault_suite.py [--seeds 1,2,3] [--events 24] [--skip-scenarios]

Starts Azurite (``npm ci`` installs the pinned one), the storage fault proxy, the TLS Azure
DevOps stand-in and the Functions queue host stand-in on loopback, drives the registered
functions of ``function_app.app`` through each scenario of ``standins/scenarios.py`` (the code
``tests/faults`` asserts on) and through one seeded random fault mix per seed
(``standins/fault_mix.py``), and prints, per row and in total: events, event x rule pairs,
faults injected by kind, runs, poison messages, lost and doubled. Time is compressed as
``standins/timescale.py`` states (host.json's 60 s visibility timeout runs as 6 s). Exits 1 if
any event x rule did not end as exactly one run or one poison message with its ERROR line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from standins import scenarios  # noqa: E402
from standins.azurite import Azurite, AzuriteMissing, running_azurite  # noqa: E402
from standins.fault_mix import MixPlan, fault_mix  # noqa: E402
from standins.harness import RelayHarness  # noqa: E402
from standins.outcomes import Figures, format_table  # noqa: E402
from standins.timescale import TimeScale  # noqa: E402

Scenario = tuple[str, dict[str, Any], Callable[[RelayHarness], Figures]]


def _first(result: Figures | tuple[Figures, Any]) -> Figures:
    return result[0] if isinstance(result, tuple) else result


def named_scenarios() -> list[Scenario]:
    """(name, harness options, scenario) for every scenario of ``standins.scenarios``."""
    longest = TimeScale().longest_deadline()
    rows: list[Scenario] = [
        ("queued", {}, scenarios.queued_write_fails),
        ("queued-copy", {}, lambda h: scenarios.queued_write_fails(h, copy_during_lease=True)),
        ("redelivery", {"deadline": round(longest - 0.05, 2)}, scenarios.retry_function_fails_once),
    ]
    rows += [
        (f"ambiguous-{n}", {}, lambda h, k=kind: scenarios.ambiguous_devops_failure(h, k))
        for n, kind in enumerate(scenarios.AMBIGUOUS)
    ]
    rows += [
        ("listing", {}, lambda h: scenarios.ambiguous_devops_failure(h, "run created, then 504", listing_fails=2)),
        ("last-ambiguous", {"max_attempts": 1}, scenarios.ambiguous_last_attempt),
        ("takeover", {}, scenarios.takeover_finds_the_started_run),
        ("fencing", {}, lambda h: _first(scenarios.stale_holder_is_fenced(h))),
        ("copies", {}, scenarios.concurrent_copies),
        ("poison-again", {"max_attempts": 1, "lose_result": 1.0}, scenarios.poisoned_then_delivered_again),
        ("poison-send", {"max_attempts": 1}, scenarios.poison_send_fails_once),
        ("parking-lost", {"max_attempts": 1}, scenarios.parking_write_answer_lost),
        ("host-poison", {}, scenarios.host_gives_up),
    ]
    return rows


def run_suite(args: argparse.Namespace, azurite: Azurite, workdir: Path) -> list[Figures]:
    rows = []
    if not args.skip_scenarios:
        for name, options, scenario in named_scenarios():
            with RelayHarness(azurite, workdir / name, **options) as harness:
                rows.append(scenario(harness))
            print(f"  {rows[-1].scenario}: {dict(rows[-1].endings)}", file=sys.stderr, flush=True)
    for seed in args.seeds:
        with RelayHarness(
            azurite, workdir / f"mix-{seed}", host_instances=2, lose_result=0.2, max_attempts=2, seed=seed
        ) as harness:
            rows.append(fault_mix(harness, MixPlan(events=args.events, seed=seed)))
        print(f"  {rows[-1].scenario}: {dict(rows[-1].endings)}", file=sys.stderr, flush=True)
    return rows


def totals(rows: list[Figures]) -> str:
    faults: Counter[str] = Counter()
    endings: Counter[str] = Counter()
    for row in rows:
        faults.update(row.faults)
        endings.update(row.endings)
    lines = [
        f"events {sum(r.events for r in rows)}, event x rule {sum(r.keys for r in rows)}, "
        f"runs {sum(r.runs for r in rows)}, poisons {sum(r.poisons for r in rows)}, "
        f"lost {sum(r.lost for r in rows)}, doubled {sum(r.doubled for r in rows)}, "
        f"other violations {sum(r.violations - r.lost - r.doubled for r in rows)}",
        "endings: " + ", ".join(f"{k} {v}" for k, v in sorted(endings.items())),
        f"faults injected: {sum(faults.values())} in {len(faults)} kinds",
    ]
    lines += [f"  {count:5d}  {kind}" for kind, count in faults.most_common()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=lambda v: [int(s) for s in v.split(",") if s],
        default=[1, 2, 3],
        help="one random fault mix per seed (comma-separated)",
    )
    parser.add_argument("--events", type=int, default=24, help="distinct events per random mix")
    parser.add_argument("--skip-scenarios", action="store_true", help="only the random mixes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the relay's per-attempt warnings would drown the table
    started = time.monotonic()
    try:
        with running_azurite() as azurite, tempfile.TemporaryDirectory(prefix="fault-suite-") as workdir:
            rows = run_suite(args, azurite, Path(workdir))
    except AzuriteMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_table(rows))
    for row in rows:
        for key, lines in row.stories.items():
            print(f"\n[{row.scenario}] what the relay logged about {key}:")
            print("\n".join(f"  {line}" for line in lines))
    print()
    print(totals(rows))
    print(
        f"\nAzurite tables+queues behind the fault proxy, TLS DevOps stand-in, queue host stand-in, registered "
        f"functions; time x{TimeScale().factor:g} (standins/timescale.py); total {time.monotonic() - started:.0f} s"
    )
    return 1 if any(r.violations for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

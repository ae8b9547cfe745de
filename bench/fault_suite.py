"""The fault suite's figures, as a table anyone can print.

    .venv/bin/python bench/fault_suite.py [--events 200] [--rate 0.3] [--seed 7] [--deadline 0.5]

Starts Azurite (``npm ci`` installs the pinned one) and the TLS Azure DevOps stand-in on
loopback, drives the registered functions of ``function_app.app`` through each scenario of
``tests/faults/scenarios.py`` (the same code the tests assert on) and prints what was sent, how
the relay answered, and how many runs were expected, started, lost and duplicated. Exits 1 if
any run was lost or duplicated.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from standins.azurite import AzuriteMissing, running_azurite  # noqa: E402
from standins.harness import (  # noqa: E402
    Figures,
    RelayHarness,
    devops_down_then_back,
    format_table,
    key_vault_outage,
    random_outage,
    same_delivery_repeated,
)


def run_suite(args: argparse.Namespace, storage: str, workdir: Path) -> list[Figures]:
    def harness(name: str, **options: object) -> RelayHarness:
        return RelayHarness(storage, workdir / name, **options)  # type: ignore[arg-type]

    rows = []
    with harness("repeat") as relay:
        rows.append(same_delivery_repeated(relay))
    with harness("random", deadline=args.deadline) as relay:
        rows.append(random_outage(relay, events=args.events, rate=args.rate, seed=args.seed))
    with harness("down", deadline=1.0) as relay:
        rows.append(devops_down_then_back(relay))
    with harness("vault") as relay:
        rows.append(key_vault_outage(relay))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="distinct events in the random-outage scenario")
    parser.add_argument("--rate", type=float, default=0.3, help="share of DevOps requests answered 503/429")
    parser.add_argument("--seed", type=int, default=7, help="seed of the stand-in's fault plan")
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.5,
        help="DEVOPS_DEADLINE_SECONDS in the random-outage scenario (short: some runs queue)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the relay's per-attempt warnings would drown the table
    started = time.monotonic()
    try:
        with running_azurite() as azurite, tempfile.TemporaryDirectory(prefix="fault-suite-") as workdir:
            rows = run_suite(args, azurite.connection_string, Path(workdir))
    except AzuriteMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_table(rows))
    print(
        f"\nAzurite tables+queues, TLS DevOps stand-in, registered functions; retry-queue visibility delays "
        f"capped at 1 s (time compression); total {time.monotonic() - started:.1f} s"
    )
    return 1 if any(f.lost or f.duplicated or f.runs_started != f.runs_expected for f in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

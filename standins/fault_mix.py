"""The exactly-once property over a seeded, randomised mix of every fault the suite knows.

``fault_mix`` sends ``events`` distinct deliveries (MLflow and Databricks, two rules each;
some sent by several senders at once) while, at random but reproducibly from ``seed``:

* Azure DevOps answers POSTs 503, 429, resets, answers slowly, or creates the run and then
  answers 504, drops the connection or hangs past the lease; runs listings fail now and then;
* storage fails the writes that matter (the claim, "queued", "started", "released", the
  retry ticket, the poison message) before or after applying them, or holds them past the
  SDK's read timeout, and goes down for a window;
* the queue host (two instances) loses a completed result now and then, so a retry message is
  delivered again after the function finished.

Faults stop after ``heal_after`` seconds, so the run is bounded; whatever the queue gave up
on by then is a poison message. Then every event x rule must have ended as exactly one run or
one poison message with its ERROR line (``standins.outcomes``).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from standins.devops import Fault, FaultPlan, no_faults
from standins.harness import Delivery, RelayHarness, databricks_delivery, mlflow_delivery
from standins.outcomes import Figures, account
from standins.storage_faults import Predicate, WriteFault, queue_send, table_write


@dataclass(frozen=True)
class MixPlan:
    """How much of each fault the mix injects."""

    events: int = 12
    seed: int = 7
    devops_rate: float = 0.4  # share of DevOps POSTs that meet a fault
    listing_rate: float = 0.15  # share of runs listings / gets that fail
    storage_rate: float = 0.12  # per kind of write: share of logical writes that fail
    duplicates: float = 0.3  # share of events sent by two senders at once
    outage_seconds: float = 1.5  # one storage outage window, at a random moment
    devops_outage_seconds: float = 8.0  # one window in which every DevOps POST answers 503
    heal_after: float = 12.0


def devops_plan(rng: random.Random, plan: MixPlan, lease: float, outage: tuple[float, float]) -> FaultPlan:
    """A seeded choice of fault per DevOps POST, 503 throughout ``outage`` (thread-safe)."""
    choices = [
        Fault("status", 503),
        Fault("status", 429, retry_after="0"),
        Fault("reset"),
        Fault("slow", delay=0.3),
        Fault("status", 504, after_create=True),
        Fault("reset", after_create=True),
        Fault("slow", delay=lease + 1, after_create=True),
    ]
    lock = threading.Lock()

    def choose(_: int) -> Fault:
        if outage[0] <= time.monotonic() < outage[1]:
            return Fault("status", 503, retry_after="1")
        with lock:
            return rng.choice(choices) if rng.random() < plan.devops_rate else Fault("none")

    return choose


def listing_plan(rng: random.Random, rate: float) -> FaultPlan:
    lock = threading.Lock()

    def choose(_: int) -> Fault:
        with lock:
            return Fault("status", 503) if rng.random() < rate else Fault("none")

    return choose


def storage_faults(plan: MixPlan, read_timeout: float) -> list[WriteFault]:
    """Each write that matters fails now and then, in the ways storage fails."""
    kinds: list[tuple[str, Predicate, str]] = [
        ("claim insert reset before storage", table_write("claimed", method="POST"), "reset"),
        ("claim insert applied, answer lost", table_write("claimed", method="POST"), "applied_then_reset"),
        ("claim takeover fails (503)", table_write("claimed", method="PUT"), "error"),
        ("'queued' write fails (500)", table_write("queued"), "error"),
        ("'queued' applied, answer 500", table_write("queued"), "applied_then_error"),
        ("'started' write fails (500)", table_write("started"), "error"),
        ("'started' applied, answer lost", table_write("started"), "applied_then_reset"),
        ("'released' write fails (500)", table_write("released"), "error"),
        ("'poisoned' write fails (500)", table_write("poisoned"), "error"),
        ("retry ticket send fails (500)", queue_send("relay-retry"), "error"),
        ("retry ticket applied, answer lost", queue_send("relay-retry"), "applied_then_reset"),
        ("poison message send fails (500)", queue_send("relay-retry-poison"), "error"),
        ("ledger write slower than the SDK's timeout", table_write(), "slow"),
    ]
    return [
        WriteFault(
            kind,
            match,
            action=action,
            probability=plan.storage_rate / (3 if action == "slow" else 1),
            status=503 if "503" in kind else 500,
            delay=read_timeout * 1.5,
            seed=plan.seed + n,
        )
        for n, (kind, match, action) in enumerate(kinds)
    ]


def _deliveries(plan: MixPlan) -> list[Delivery]:
    return [
        mlflow_delivery(version=100 + n) if n % 2 else databricks_delivery(version=100 + n) for n in range(plan.events)
    ]


def fault_mix(harness: RelayHarness, plan: MixPlan | None = None) -> Figures:
    """Run the mix (see the module docstring) and account for every event x rule."""
    plan = plan or MixPlan()
    rng = random.Random(plan.seed)
    figures, started = Figures(f"random fault mix (seed {plan.seed})"), time.monotonic()
    fixed = harness.scale.fixed_durations()
    down_at = started + rng.uniform(0.5, 2.5)
    outage = (down_at, down_at + plan.devops_outage_seconds)
    harness.standin.faults = devops_plan(random.Random(rng.random()), plan, harness.lease, outage)
    figures.notes.append(f"DevOps down {plan.devops_outage_seconds:g} s from {down_at - started:.1f} s")
    harness.standin.get_faults = listing_plan(random.Random(rng.random()), plan.listing_rate)
    for fault in storage_faults(plan, fixed.storage_read_timeout):
        harness.storage.add(fault)
    window = harness.storage.outage(
        plan.outage_seconds, after=rng.uniform(0.5, 3.0), kind=rng.choice(["reset", "busy"])
    )
    figures.notes.append(f"storage outage window {plan.outage_seconds:g} s ({window.kind})")
    deliveries = _deliveries(plan)
    sends: list[tuple[float, Delivery]] = []
    for delivery in deliveries:
        copies = 2 if rng.random() < plan.duplicates else 1
        at = rng.uniform(0.0, 2.0)
        sends.extend((at + 0.05 * n, delivery) for n in range(copies))
        if copies > 1:
            figures.faults["concurrent copies of one delivery"] += copies - 1

    def sender(when: float, delivery: Delivery) -> None:
        time.sleep(max(0.0, started + when - time.monotonic()))
        figures.record(harness.send(delivery))

    healer = threading.Timer(plan.heal_after, _heal, args=(harness,))
    healer.start()
    try:
        with ThreadPoolExecutor(max_workers=len(sends)) as pool:
            for result in [pool.submit(sender, when, d) for when, d in sends]:
                result.result()
        harness.drain(timeout=180)
    finally:
        healer.cancel()
        _heal(harness)
    figures.wall_seconds = time.monotonic() - started
    return account(harness, deliveries, figures)


def _heal(harness: RelayHarness) -> None:
    harness.standin.faults = no_faults
    harness.standin.get_faults = no_faults
    harness.storage.clear()

"""The fault scenarios of issue 12, written once: ``tests/faults`` asserts on them and
``bench/fault_suite.py`` prints their figures.

Each takes an entered ``RelayHarness``, plays one failure a real deployment meets, lets the
queue host drain, and returns the ``Figures`` (how every event x rule ended). Durations are
in the harness's compressed time (``standins.timescale``) and derived from the relay's own
lease and the host's visibility timeout, never guessed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from standins.devops import Fault, FaultPlan, no_faults
from standins.harness import Delivery, RelayHarness, mlflow_delivery
from standins.outcomes import Figures, account
from standins.storage_faults import WriteFault, queue_send, table_write

DOWN = Fault("status", 503)
AMBIGUOUS: dict[str, Fault] = {
    "run created, then 504": Fault("status", 504, after_create=True),
    "run created, then connection drop": Fault("reset", after_create=True),
    "run created, then no answer past the lease": Fault("slow", delay=0.0, after_create=True),  # delay set below
}


def first_posts(fault: Fault, count: int) -> FaultPlan:
    """``fault`` for the first ``count`` POSTs, then normal answers."""
    return lambda number: fault if number <= count else Fault("none")


def _finish(harness: RelayHarness, deliveries: list[Delivery], figures: Figures, started: float) -> Figures:
    harness.drain()
    figures.wall_seconds = time.monotonic() - started
    return account(harness, deliveries, figures)


def queued_write_fails(harness: RelayHarness, *, copy_during_lease: bool = False) -> Figures:
    """DevOps is down, the run is queued, and the table write that records "queued" fails.

    The ticket becomes visible while the claim is still live: it must come back after the lease
    (deferred), never be taken for a duplicate, and start the run exactly once. With
    ``copy_during_lease`` a copy of the delivery arrives while the ticket waits.
    """
    name = "'queued' not recorded" + (", copy during the lease" if copy_during_lease else "")
    figures, started = Figures(name), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    harness.storage.add(WriteFault("ledger write of 'queued' fails (500)", table_write("queued"), count=2))
    delivery = mlflow_delivery()
    figures.record(harness.send(delivery))
    harness.standin.faults = no_faults
    if copy_during_lease:
        time.sleep(harness.lease / 2)
        figures.record(harness.send(delivery))
    return _finish(harness, [delivery], figures, started)


def retry_function_fails_once(harness: RelayHarness) -> Figures:
    """The retry function raises (DevOps down and its requeue cannot be written): the host makes
    the message visible again after ``visibilityTimeout``; that redelivery must start the run."""
    figures, started = Figures("retry function raises, host redelivers"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    delivery = mlflow_delivery()
    figures.record(harness.send(delivery))
    harness.storage.add(WriteFault("retry ticket send fails (500)", queue_send("relay-retry"), count=2))
    assert harness.host is not None
    deadline = time.monotonic() + 4 * harness.visibility_timeout
    while harness.host.stats.failed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    harness.standin.faults = no_faults  # DevOps is back before the host redelivers
    return _finish(harness, [delivery], figures, started)


def ambiguous_devops_failure(harness: RelayHarness, kind: str, *, listing_fails: int = 0) -> Figures:
    """Azure DevOps creates the run and then fails ambiguously (``AMBIGUOUS[kind]``); with
    ``listing_fails``, the first runs listings fail too, so the check must wait for later."""
    figures, started = Figures(f"{kind}" + (", listing fails" if listing_fails else "")), time.monotonic()
    fault = AMBIGUOUS[kind]
    if fault.kind == "slow":
        fault = Fault("slow", delay=harness.lease + 2, after_create=True)
    harness.standin.faults = first_posts(fault, 2)
    if listing_fails:
        harness.standin.get_faults = lambda number: DOWN if number <= listing_fails else Fault("none")
    delivery = mlflow_delivery()
    figures.record(harness.send(delivery))
    return _finish(harness, [delivery], figures, started)


def ambiguous_last_attempt(harness: RelayHarness) -> Figures:
    """The queue's last attempt creates the run and then gets no answer: the relay must look
    for the run before it says "NOT deployed". Use a harness with ``max_attempts=1``."""
    figures, started = Figures("last queue attempt ambiguous"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    delivery = mlflow_delivery()
    figures.record(harness.send(delivery))
    hang = Fault("slow", delay=harness.lease + 2, after_create=True)
    after = harness.standin.post_count
    harness.standin.faults = lambda number: hang if number <= after + 2 else Fault("none")
    return _finish(harness, [delivery], figures, started)


def takeover_finds_the_started_run(harness: RelayHarness) -> Figures:
    """The holder's run is created, then DevOps hangs past the lease; nothing can be queued or
    released, so the claim just expires. The sender's repeat takes it over and must find the
    run instead of posting again."""
    figures, started = Figures("expired claim taken over, run exists"), time.monotonic()
    harness.standin.faults = first_posts(Fault("slow", delay=harness.lease + 2, after_create=True), 2)
    harness.storage.add(WriteFault("retry ticket send fails (500)", queue_send("relay-retry"), count=2))
    harness.storage.add(WriteFault("ledger write of 'released' fails (500)", table_write("released"), count=2))
    delivery = mlflow_delivery()
    figures.record(harness.send(delivery))
    return _finish(harness, [delivery], figures, started)


def stale_holder_is_fenced(harness: RelayHarness) -> tuple[Figures, threading.Event]:
    """A holder slower than its lease: its write releasing the claim is held by storage until
    after a successor took the entry over and started the run; it then lands, and must be
    refused (412) instead of overwriting ``started``. A third copy must answer duplicate."""
    figures, started = Figures("stale holder's late write fenced"), time.monotonic()
    release = threading.Event()
    harness.standin.faults = lambda _: DOWN
    harness.storage.add(WriteFault("retry ticket send fails (500)", queue_send("relay-retry"), count=2))
    harness.storage.add(
        WriteFault(
            "ledger write of 'released' held past the lease",
            table_write("released"),
            action="slow",
            count=2,
            delay=60,
            hold=release,
        )
    )
    delivery = mlflow_delivery()
    figures.record([harness.post(delivery)], final=False)  # 503: nothing started, queued or released
    harness.standin.faults = no_faults
    time.sleep(harness.lease + 0.5)
    figures.record(harness.send(delivery))  # the successor takes the expired claim over
    release.set()
    held = "ledger write of 'released' held past the lease"
    # Every held write (both rules; the SDK does not retry a PATCH after a read timeout) lands.
    wait_until(lambda: len(harness.storage.late) >= harness.storage.injected[held], timeout=10)
    figures.record(harness.send(delivery))  # a third copy
    return _finish(harness, [delivery], figures, started), release


def concurrent_copies(harness: RelayHarness, *, copies: int = 10, latency: float = 0.3) -> Figures:
    """One delivery sent ``copies`` times at once over HTTP while DevOps answers slowly."""
    figures, started = Figures(f"same delivery x{copies} at once"), time.monotonic()
    harness.standin.latency = latency
    delivery = mlflow_delivery()
    with harness.http_host() as post, ThreadPoolExecutor(max_workers=copies) as pool:
        for answers in pool.map(lambda _: harness.send(delivery, post=post), range(copies)):
            figures.record(answers)
    figures.faults["concurrent copies of one delivery"] += copies - 1
    return _finish(harness, [delivery], figures, started)


def host_gives_up(harness: RelayHarness) -> Figures:
    """The retry function raises on every delivery (DevOps down, nothing durable can be written):
    after ``maxDequeueCount`` the host moves the message to the poison queue, and the relay's
    last delivery logs the ERROR line naming the model version."""
    figures, started = Figures("retry raises until the host poisons it"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    delivery = mlflow_delivery(version=41)
    figures.record(harness.send(delivery))
    harness.storage.add(WriteFault("retry ticket send fails (500)", queue_send("relay-retry"), count=10_000))
    return _finish(harness, [delivery], figures, started)


def poisoned_then_delivered_again(harness: RelayHarness) -> Figures:
    """The queue gives up (poison message, ERROR line), then the host delivers the same ticket
    again (it lost the completed result) after DevOps came back: one poison message, no run.

    Use a harness with ``max_attempts=1`` and ``lose_result=1``.
    """
    figures, started = Figures("poisoned, then the ticket delivered again"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    delivery = mlflow_delivery(version=42)
    figures.record(harness.send(delivery))
    wait_until(lambda: len(harness.poison_messages()) >= 2, timeout=4 * harness.visibility_timeout)
    harness.standin.faults = no_faults
    return _finish(harness, [delivery], figures, started)


def poison_send_fails_once(harness: RelayHarness) -> Figures:
    """The queue gives up, but the poison message cannot be written: the entry goes back to
    "queued", the host delivers the ticket again, and it is parked once. Use ``max_attempts=1``."""
    figures, started = Figures("poison message cannot be written once"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    harness.storage.add(WriteFault("poison message send fails (500)", queue_send("relay-retry-poison"), count=2))
    delivery = mlflow_delivery(version=43)
    figures.record(harness.send(delivery))
    return _finish(harness, [delivery], figures, started)


def parking_write_answer_lost(harness: RelayHarness) -> Figures:
    """The queue gives up; its write recording "poisoned" lands but the answer is a 500, so the
    function raises and the host delivers the ticket again: the poison message is written once,
    by that redelivery. Use ``max_attempts=1``."""
    figures, started = Figures("'poisoned' written, answer lost"), time.monotonic()
    harness.standin.faults = lambda _: DOWN
    harness.storage.add(
        WriteFault("'poisoned' applied, answer 500", table_write("poisoned"), action="applied_then_error", count=2)
    )
    delivery = mlflow_delivery(version=44)
    figures.record(harness.send(delivery))
    return _finish(harness, [delivery], figures, started)


def wait_until(condition: Callable[[], bool], *, timeout: float) -> None:
    """Poll ``condition``. Raises ``TimeoutError`` when it stays false for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s")
        time.sleep(0.05)

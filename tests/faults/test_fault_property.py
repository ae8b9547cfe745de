"""The exactly-once property over a seeded random mix of every fault (``standins.fault_mix``):
every event x rule ends as exactly one run, or one poison message with an ERROR line naming its
model version. ``bench/fault_suite.py`` runs larger mixes and prints the figures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from standins.fault_mix import MixPlan, fault_mix
from standins.harness import RelayHarness
from standins.outcomes import OK_KINDS, format_table

pytestmark = pytest.mark.azurite

SEED = 11


def test_random_fault_mix_ends_every_event_and_rule_exactly_once(harness: Callable[..., RelayHarness]) -> None:
    relay = harness(host_instances=2, lose_result=0.2, max_attempts=2, seed=SEED)
    figures = fault_mix(relay, MixPlan(events=10, seed=SEED))
    table = format_table([figures])
    print(table)
    assert figures.violations == 0, table
    assert set(figures.endings) <= set(OK_KINDS) and sum(figures.endings.values()) == figures.keys == 20, table
    assert figures.runs + figures.poisons == figures.keys, table
    # The mix must really have met the faults it is about, or the property says nothing.
    assert len(figures.faults) >= 10 and sum(figures.faults.values()) >= 40, table
    assert any(k.startswith("devops run created") for k in figures.faults), table
    assert figures.faults["host lost a completed result"] >= 1, table

"""The fault suite (issue 4): each scenario's figures must show nothing lost, nothing duplicated.

The scenarios live in ``scenarios.py`` and also print their figures in ``bench/fault_suite.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from standins.harness import (
    RULES_PER_EVENT,
    Figures,
    RelayHarness,
    devops_down_then_back,
    format_table,
    key_vault_outage,
    random_outage,
    same_delivery_repeated,
)

pytestmark = pytest.mark.azurite


def _no_loss_no_duplicate(figures: Figures) -> None:
    print(format_table([figures]))  # shown with -s or on failure
    assert (figures.lost, figures.duplicated) == (0, 0), format_table([figures])
    assert figures.runs_started == figures.runs_expected, format_table([figures])
    assert not [n for n in figures.notes if n.startswith("unexpected run")], figures.notes


def test_same_delivery_twenty_times_ten_concurrently_starts_one_run_per_rule(
    harness: Callable[..., RelayHarness],
) -> None:
    figures = same_delivery_repeated(harness(), concurrent=10, sequential=10)
    _no_loss_no_duplicate(figures)
    assert figures.sent == 20 and figures.runs_expected == RULES_PER_EVENT
    # Concurrent copies may each win one rule's claim (202 in_progress for the other); every
    # sequential repeat finds both runs started.
    assert figures.answers["200 duplicate"] >= 10
    assert set(figures.answers) <= {"200 triggered", "200 duplicate", "202 in_progress"}


def test_two_hundred_events_with_thirty_percent_503_429_lose_and_duplicate_nothing(
    harness: Callable[..., RelayHarness],
) -> None:
    figures = random_outage(harness(deadline=0.5), events=200, rate=0.3)
    _no_loss_no_duplicate(figures)
    assert figures.runs_expected == 200 * RULES_PER_EVENT
    assert set(figures.answers) <= {"200 triggered", "202 queued", "503 error", "503 unavailable"}


def test_devops_down_for_the_deadline_answers_202_then_starts_one_run_when_back(
    harness: Callable[..., RelayHarness],
) -> None:
    figures = devops_down_then_back(harness(deadline=1.0))
    _no_loss_no_duplicate(figures)
    assert figures.answers == {"202 queued": 2, "200 duplicate": 2}
    assert figures.queue_messages == 2 * RULES_PER_EVENT


def test_key_vault_outage_serves_from_cache_until_the_ttl_then_answers_503(
    harness: Callable[..., RelayHarness],
) -> None:
    figures = key_vault_outage(harness(), ttl=300)
    _no_loss_no_duplicate(figures)
    assert figures.answers == {"200 triggered": 3, "503 error": 3}
    assert all(n.endswith("Retry-After=30") for n in figures.notes if n.startswith("after TTL"))

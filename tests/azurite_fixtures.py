"""Azurite fixtures shared by the storage and fault suites: one Azurite per test process, a relay
harness per test. Imported by their conftest.py files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from standins.azurite import Azurite, acquire_shared, release_shared
from standins.harness import RelayHarness


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite on loopback for the whole session (fails, never skips, when not installed)."""
    yield acquire_shared()
    release_shared()


@pytest.fixture
def harness(azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., RelayHarness]]:
    """Builds a ``RelayHarness`` on this session's Azurite; entered and closed for the test."""
    opened: list[RelayHarness] = []

    def open_harness(**options: Any) -> RelayHarness:
        relay_harness = RelayHarness(azurite, tmp_path / f"h{len(opened)}", **options)
        opened.append(relay_harness.__enter__())
        return relay_harness

    yield open_harness
    for relay_harness in reversed(opened):
        relay_harness.__exit__(None, None, None)

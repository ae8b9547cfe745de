"""``scripts/record_samples.py`` against the installed MLflow: the recording it makes is the one the tests read.

Runs the script as a user does (its own ``mlflow server``, nothing shared with this module's other
tests) into a temporary folder, then checks its files the way the known-answer tests use them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recorded_samples import RECORDED_SEQUENCE, SAMPLES_DIR, event_of
from webhook.delivery import Delivery

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDING_TIMEOUT_SECONDS = 300  # server start (90 s bound) + nine deliveries (20 s bound each) + settle


def test_recording_from_a_real_server_yields_the_committed_sequence_of_verifiable_deliveries(tmp_path: Path) -> None:
    out = tmp_path / SAMPLES_DIR.name
    result = subprocess.run(
        [sys.executable, "scripts/record_samples.py", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RECORDING_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"9 deliveries and PROVENANCE.md written to {out}" in result.stdout

    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{n}.json" for n in RECORDED_SEQUENCE), "PROVENANCE.md"])
    provenance = (out / "PROVENANCE.md").read_text(encoding="utf-8")
    assert [line.split("`")[1] for line in provenance.splitlines() if line.startswith("| ") and "`" in line] == [
        f"{n}.json" for n in RECORDED_SEQUENCE
    ]
    for name in RECORDED_SEQUENCE:
        sample = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        committed = json.loads((SAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))
        body = sample["body"].encode("utf-8")
        timestamp = int(sample["headers"]["X-MLflow-Timestamp"])
        event = Delivery.from_http(sample["headers"], body).parse(now=timestamp + 5, max_age=300)
        Delivery.from_http(sample["headers"], body).verify(secrets=[sample["secret"]], now=timestamp + 5, max_age=300)
        assert event.event == event_of(name)
        assert list(sample["headers"]) == list(committed["headers"])
        assert _shape(json.loads(body)) == _shape(json.loads(committed["body"])), name


def _shape(value: object) -> object:
    """Keys and value types, recursively: what must not change between two recordings."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__

"""The benchmark still runs end to end (issue 7): a smoke run, no timing assertions.

Runs ``bench/run.py --quick`` in a subprocess and checks that it measured (exit 0 or 1: targets
met or missed, never 2: a measure could not run), that every relay delivery started exactly one
run (the measures raise otherwise), that the amortisation counts, which are exact and not
timings, meet their targets, that the cold floor covers every distribution the relay's first
answer loaded (``run_cold`` raises otherwise), that this answer loads no azure-identity, and
that the seed peer ran. The burst is left out (it is the slowest, and the fault suite covers
concurrency). The cold measure builds its runtime-only venvs (``.venv-bench/`` and the seed's
``.venv-seed/``, about half a minute each the first time) and starts Azurite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_quick_run_measures_and_reports(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    measures = ["warm", "cold", "depth", "seed", "amortise", "fanout"]
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--only", *measures, "--json", str(results)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(results.read_text())
    assert report["errors"] == {}
    assert "| Measure" in done.stdout

    warm = report["warm"]
    assert warm["deliveries"] == 200
    assert warm["relay_runs_at_standin"] == 2 * 200  # two relay series (decision logs off and on)
    assert warm["core_loop_p50_us"] > 0 and warm["core_after_post_p50_us"] > 0

    cold = report["cold"]
    kinds = ("trivial", "floor", "relay_key_vault", "relay_env_secrets", "relay_standin_ca", "seed")
    assert [cold[k]["runs"] for k in kinds] == [3] * len(kinds)
    assert cold["runs_at_standin"] == 4 * 3  # three relay series and the seed peer
    assert {"azure-keyvault-secrets", "azure-data-tables"} <= set(cold["floor"]["distributions"])
    # On Azure's identity endpoint the first answer loads neither azure-identity nor the Queue SDK.
    assert not {"azure-identity", "msal", "azure-storage-queue"} & set(cold["relay_key_vault"]["distributions"])
    assert "azure-devops" in cold["seed"]["distributions"]

    seed = report["seed"]
    assert seed["runs_at_standin"] == 3 * 4 * (seed["warmup"] + 100 // 4)  # 3 variants x 4 children
    assert all(seed[name]["deliveries"] == 100 for name in seed if isinstance(seed[name], dict))

    depth = report["depth"]
    assert depth["runs"] == 2
    assert set(depth["flights_per_service"]) >= {"identity", "keyvault", "table", "devops"}  # every dependency proxied

    counts = [row for row in report["table"] if row["measure"].startswith(("Key Vault reads", "token acquisitions"))]
    assert len(counts) == 3
    assert all(row["result"] == "PASS" for row in counts), counts
    assert any(row["measure"].startswith("fan-out") for row in report["table"])

"""Burst: N distinct signed deliveries posted at once to ``mlflow-relay serve``.

The relay runs in its own process (the local host, serving the registered functions), the
DevOps stand-in and the asyncio ``httpx`` client in this one. Every delivery must be answered
200 "triggered" and must have started exactly one run at the stand-in: none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    DEVOPS_PAT,
    PROJECT,
    REPO_ROOT,
    WEBHOOK_SECRET,
    clean_environ,
    mlflow_delivery,
    percentile,
    start_devops_standin,
)

ROUTE = "/api/MLflowWebHookTransition"


@dataclass
class BurstResult:
    deliveries: int
    statuses: dict[str, int]
    answered_ok: int
    latencies_ms: list[float]
    wall_s: float
    runs: int
    unique_runs: int
    devops_latency_s: float

    @property
    def lost(self) -> int:
        return self.deliveries - self.unique_runs

    @property
    def duplicated(self) -> int:
        return self.runs - self.unique_runs

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "statuses": self.statuses,
            "answered_ok": self.answered_ok,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p99_ms": percentile(self.latencies_ms, 99),
            "max_ms": max(self.latencies_ms, default=float("nan")),
            "wall_s": self.wall_s,
            "runs_at_standin": self.runs,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "devops_latency_s": self.devops_latency_s,
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_command(port: int) -> list[str]:
    script = shutil.which("mlflow-relay", path=os.path.dirname(sys.executable))
    prefix = [script] if script else [sys.executable, "-m", "relay_tools.cli"]
    return [*prefix, "serve", "--port", str(port)]


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow-relay serve exited with {process.returncode}")
        try:
            if httpx.get(base_url + ROUTE, timeout=1.0).status_code == 405:  # up, and it is the relay
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("mlflow-relay serve did not become ready")


async def _post_all(base_url: str, count: int) -> tuple[list[tuple[int, str, float]], float, list[str]]:
    deliveries = [mlflow_delivery() for _ in range(count)]
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120.0) as client:

        async def post(headers: dict[str, str], body: bytes) -> tuple[int, str, float]:
            start = time.perf_counter()
            try:
                response = await client.post(ROUTE, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return 0, type(exc).__name__, (time.perf_counter() - start) * 1000
            status = response.json().get("status", "?") if response.status_code < 500 else "error"
            return response.status_code, status, (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        answers = await asyncio.gather(*(post(d.headers, d.body) for d in deliveries))
        wall = time.perf_counter() - start
    return list(answers), wall, [d.delivery_id for d in deliveries]


def run_burst(workdir: Path, rules: Path, *, deliveries: int, latency: float = 0.0) -> BurstResult:
    standin = start_devops_standin(workdir / "burst", pat=DEVOPS_PAT, latency=latency)
    port = _free_port()
    env = clean_environ(
        os.environ,
        {
            "DEVOPS_ORG_URL": standin.org_url,
            "DEVOPS_PROJECT": PROJECT,
            "DEVOPS_CA_BUNDLE": str(standin.tls.ca_file),
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "DEVOPS_AUTH": "pat",
            "DEVOPS_PAT": DEVOPS_PAT,
            "ROUTES_FILE": str(rules),
        },
    )
    process = subprocess.Popen(
        _serve_command(port), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(base_url, process)
        asyncio.run(_post_all(base_url, 5))  # first use builds the relay: not part of the burst
        before = len(standin.runs)
        answers, wall, ids = asyncio.run(_post_all(base_url, deliveries))
        time.sleep(0.2)  # let any straggling run POST land before counting
        wanted = set(ids)
        started = [r.template_parameters.get("delivery_id") for r in standin.runs[before:]]
        ours = [d for d in started if d in wanted]
        statuses = Counter(f"{code} {status}" for code, status, _ in answers)
        ok = sum(1 for code, status, _ in answers if code == 200 and status == "triggered")
        return BurstResult(
            deliveries, dict(statuses), ok, [ms for *_, ms in answers], wall, len(ours), len(set(ours)), latency
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        standin.stop()

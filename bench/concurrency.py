"""Concurrency per instance: a burst of deliveries through the Python 3.13 worker's own dispatch.

What the platform does with concurrent requests to one Python instance (see bench/README.md):
Flex Consumption sends an instance at most ``perInstanceConcurrency`` HTTP requests at a time; the
worker turns each into a task on its one event loop (``azure_functions_runtime.invocation_request``);
an ``async def`` function runs on that loop, a synchronous one on the runtime's thread pool, whose
size is ``PYTHON_THREADPOOL_THREAD_COUNT`` or, unset, ``ThreadPoolExecutor``'s default
``min(32, cpus + 4)``. Requests beyond the pool wait inside the worker.

Each variant runs in a fresh process that indexes its app with ``azure-functions-runtime`` (the
host's side is ``standins/functions_host.py``), warms up, then receives ``deliveries``
distinct signed deliveries at once, at most ``concurrency`` in flight (the platform's per-instance
limit). Azure DevOps is the TLS stand-in answering after ``latency`` seconds. Variants: the relay's
synchronous function with the default pool, with ``PYTHON_THREADPOOL_THREAD_COUNT=32`` (its
HTTP pool's size), and with 16 threads and at most 16 deliveries in flight (the template's
``perInstanceConcurrency``; the rest wait at the host, which would give them to other instances),
and ``bench/async_app`` (``async def`` with ``httpx.AsyncClient``, same pool
limits). The baseline is the same POSTs from one pooled ``httpx.AsyncClient`` with no relay and no
worker: what the stand-in and the pool allow at best. Figures: latency from the burst's start
(p50/p99; one instance takes the whole burst), the burst's wall time and instance-seconds per 1,000 deliveries (the
instance is busy for the whole wall time). Needs Python 3.13 with the dev extras (the runtime
library and protobuf).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DEVOPS_PAT, REPO_ROOT, child_report, clean_environ, percentile, start_devops_standin
from bench.package import deployment_package
from bench.warm import relay_settings

CHILD = """
import asyncio, json, os, sys, time
from pathlib import Path
sys.path.append(os.environ["BENCH_REPO"])  # the host stand-in and the signer; the app dir stays first
from bench.common import mlflow_delivery
from standins.functions_host import FunctionsHost
import azure_functions_runtime

host = FunctionsHost(Path.cwd()).start()
name, n, limit = "MLflowWebHookTransition", int(os.environ["BENCH_N"]), int(os.environ["BENCH_C"])
for _ in range(5):  # builds the relay, opens the pooled connections
    d = mlflow_delivery()
    assert host.run(host.http(name, method="POST", headers=d.headers, body=d.body)).status == 200
deliveries = [mlflow_delivery() for _ in range(n)]

async def burst():
    gate, t0 = asyncio.Semaphore(limit), time.perf_counter()
    async def one(d):
        async with gate:
            started = time.perf_counter()
            answer = await host.http(name, method="POST", headers=d.headers, body=d.body)
            ended = time.perf_counter()
        return answer.status, answer.json().get("status"), ended - t0, ended - started
    answers = await asyncio.gather(*(one(d) for d in deliveries))
    return answers, time.perf_counter() - t0

answers, wall = host.run(burst())
pool = azure_functions_runtime.get_threadpool_executor()
print(json.dumps({"wall_s": wall, "answers": answers, "delivery_ids": [d.delivery_id for d in deliveries],
                  "threads": pool._max_workers, "cpus": os.cpu_count()}))
"""

# The baseline: the same POSTs with no relay and no worker, from one pooled AsyncClient with the
# relay's pool limits: what the stand-in and the pool allow at best.
BARE_CHILD = """
import asyncio, base64, json, os, ssl, sys, time
sys.path.append(os.environ["BENCH_REPO"])
import httpx
from bench.common import mlflow_delivery
n = int(os.environ["BENCH_N"])
url = os.environ["DEVOPS_ORG_URL"] + "/" + os.environ["DEVOPS_PROJECT"] + "/_apis/pipelines/21/runs?api-version=7.1"
auth = {"Authorization": "Basic " + base64.b64encode((":" + os.environ["DEVOPS_PAT"]).encode()).decode()}
ids = [mlflow_delivery().delivery_id for _ in range(n)]

async def burst():
    verify = ssl.create_default_context(cafile=os.environ["DEVOPS_CA_BUNDLE"])
    async with httpx.AsyncClient(verify=verify, timeout=120, limits=httpx.Limits(max_connections=32,
                                 max_keepalive_connections=16)) as client:
        for _ in range(5):
            await client.post(url, json={"templateParameters": {"delivery_id": "warm-up"}}, headers=auth)
        t0 = time.perf_counter()
        async def one(i):
            r = await client.post(url, json={"templateParameters": {"delivery_id": i}}, headers=auth)
            ended = time.perf_counter()
            return r.status_code, "triggered" if r.status_code == 200 else "?", ended - t0, ended - t0
        answers = await asyncio.gather(*(one(i) for i in ids))
        return answers, time.perf_counter() - t0

answers, wall = asyncio.run(burst())
print(json.dumps({"wall_s": wall, "answers": answers, "delivery_ids": ids, "threads": 0, "cpus": os.cpu_count()}))
"""

BASELINE = "bare httpx.AsyncClient POSTs (no relay, no worker)"
# What infra/resources.bicep sets as perInstanceConcurrency and PYTHON_THREADPOOL_THREAD_COUNT (equal).
_TEMPLATE_SETTING = re.search(
    r"param httpPerInstanceConcurrency int = (\d+)", (REPO_ROOT / "infra" / "resources.bicep").read_text()
)
PER_INSTANCE_CONCURRENCY = int(_TEMPLATE_SETTING.group(1)) if _TEMPLATE_SETTING else 16


@dataclass
class VariantResult:
    name: str
    deliveries: int
    concurrency: int
    threads: int
    cpus: int
    wall_s: float
    latency_ms: list[float]
    dispatched_ms: list[float]  # from the host dispatching it to its answer
    ok: int
    runs_one_each: bool

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "concurrency": self.concurrency,
            "threads": self.threads,
            "cpus": self.cpus,
            "wall_s": round(self.wall_s, 2),
            "answered_triggered": self.ok,
            "p50_ms": percentile(self.latency_ms, 50),
            "p99_ms": percentile(self.latency_ms, 99),
            "instance_s_per_1000": self.wall_s * 1000 / self.deliveries,
            "one_run_each": self.runs_one_each,
        }


def _async_app(sync_app: Path) -> Path:
    app_dir = sync_app.parent / "wwwroot-async"
    shutil.rmtree(app_dir, ignore_errors=True)
    shutil.copytree(sync_app, app_dir)
    shutil.copy(REPO_ROOT / "bench" / "async_app" / "function_app.py", app_dir / "function_app.py")
    return app_dir


def run_concurrency(workdir: Path, rules: Path, *, deliveries: int, latency: float = 0.2) -> dict[str, VariantResult]:
    """Run each variant's burst in its own worker process; see the module docstring.

    Raises:
        RuntimeError: a child failed (for example without azure-functions-runtime), or a delivery
            was not answered 200 "triggered" with exactly one run started for it.
    """
    try:
        import azure_functions_runtime  # noqa: F401
    except ImportError:
        raise RuntimeError("needs Python 3.13 with the dev extras (azure-functions-runtime, protobuf)") from None
    sync_app = deployment_package(workdir / "package").app_dir
    async_app = _async_app(sync_app)
    standin = start_devops_standin(workdir / "concurrency", pat=DEVOPS_PAT, latency=latency)
    n, c = deliveries, PER_INSTANCE_CONCURRENCY
    variants = [
        (BASELINE, sync_app, {}, n),
        ("sync def, default thread pool", sync_app, {}, n),
        ("sync def, PYTHON_THREADPOOL_THREAD_COUNT=32", sync_app, {"PYTHON_THREADPOOL_THREAD_COUNT": "32"}, n),
        (
            f"sync def, {c} threads, at most {c} in flight (the template)",
            sync_app,
            {"PYTHON_THREADPOOL_THREAD_COUNT": str(c)},
            c,
        ),
        ("async def + httpx.AsyncClient", async_app, {}, n),
    ]
    results: dict[str, VariantResult] = {}
    try:
        for name, app_dir, extra, limit in variants:
            env = clean_environ(
                os.environ,
                {
                    **relay_settings(standin, rules),
                    **extra,
                    "PYTHONPATH": str(app_dir),
                    "BENCH_REPO": str(REPO_ROOT),
                    "BENCH_N": str(deliveries),
                    "BENCH_C": str(limit),
                },
            )
            code = BARE_CHILD if name == BASELINE else CHILD
            report = child_report(
                [sys.executable, "-c", code], env=env, cwd=app_dir, timeout=600, what=f"{name}: worker"
            )
            started = [r.template_parameters.get("delivery_id") for r in standin.runs]
            one_each = all(started.count(d) == 1 for d in report["delivery_ids"])
            ok = sum(1 for status, label, *_ in report["answers"] if status == 200 and label == "triggered")
            results[name] = VariantResult(
                name,
                deliveries,
                limit,
                report["threads"],
                report["cpus"],
                report["wall_s"],
                [a[2] * 1000 for a in report["answers"]],
                [a[3] * 1000 for a in report["answers"]],
                ok,
                one_each,
            )
            if ok != deliveries or not one_each:
                raise RuntimeError(f"{name}: {ok}/{deliveries} answered triggered, one run each: {one_each}")
    finally:
        standin.stop()
    return results

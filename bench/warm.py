"""Warm overhead: the registered HTTP function, in-process, versus a bare ``httpx`` POST.

Both sides post to the same loopback TLS DevOps stand-in, trust the same CA and reuse their
connections. They run in alternating batches (ABBA order) so drift hits both equally. A
diagnostic pair times the sans-I/O core (verify, parse, route) back to back and right after a
bare POST.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx

from bench.common import (
    DEVOPS_PAT,
    PROJECT,
    WEBHOOK_SECRET,
    SignedDelivery,
    apply_environ,
    mlflow_delivery,
    percentile,
    start_devops_standin,
)
from relay.composition import load_rules_file
from standins.devops import DevOpsStandIn
from webhook.delivery import Delivery
from webhook.routing import route_event
from webhook.rules import RouteRules

BATCH = 50
WARMUP = 100


def http_request(delivery: SignedDelivery) -> func.HttpRequest:
    """The request as the Functions worker hands it to the function."""
    return func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/MLflowWebHookTransition",
        headers=dict(delivery.headers),
        params={},
        route_params={},
        body=delivery.body,
    )


def relay_handler() -> Callable[[func.HttpRequest], func.HttpResponse]:
    """The webhook function's user function, found the way the worker indexes it."""
    import function_app
    from relay_tools.local_host import http_functions

    return http_functions(function_app.app)["mlflowwebhooktransition"].handler


def relay_settings(standin: DevOpsStandIn, rules: Path) -> dict[str, str]:
    """Local-development secrets from the environment (no Key Vault), PAT auth, in-memory ledger."""
    return {
        "DEVOPS_ORG_URL": standin.org_url,
        "DEVOPS_PROJECT": PROJECT,
        "DEVOPS_CA_BUNDLE": str(standin.tls.ca_file),
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DEVOPS_AUTH": "pat",
        "DEVOPS_PAT": DEVOPS_PAT,
        "ROUTES_FILE": str(rules),
    }


@dataclass
class WarmResult:
    relay_ms: list[float]
    relay_logged_ms: list[float]
    bare_ms: list[float]
    relay_runs: int
    relay_delivery_ids: int
    core_loop_us: list[float]
    core_after_post_us: list[float]

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": len(self.relay_ms),
            "bare_posts": len(self.bare_ms),
            "relay_p50_ms": percentile(self.relay_ms, 50),
            "relay_p99_ms": percentile(self.relay_ms, 99),
            "bare_p50_ms": percentile(self.bare_ms, 50),
            "bare_p99_ms": percentile(self.bare_ms, 99),
            "relay_info_logs_p50_ms": percentile(self.relay_logged_ms, 50),
            "relay_info_logs_p99_ms": percentile(self.relay_logged_ms, 99),
            "relay_runs_at_standin": self.relay_runs,
            "core_loop_p50_us": percentile(self.core_loop_us, 50),
            "core_after_post_p50_us": percentile(self.core_after_post_us, 50),
        }


def _relay_batch(handler: Callable[[func.HttpRequest], func.HttpResponse], n: int, ids: list[str]) -> list[float]:
    requests = []
    for _ in range(n):
        delivery = mlflow_delivery()
        ids.append(delivery.delivery_id)
        requests.append(http_request(delivery))
    timings, answers = [], []
    for request in requests:
        start = time.perf_counter_ns()
        response = handler(request)
        timings.append((time.perf_counter_ns() - start) / 1e6)
        answers.append(response)
    for response in answers:
        document = json.loads(response.get_body())
        if response.status_code != 200 or document.get("status") != "triggered":
            raise RuntimeError(f"relay answered {response.status_code}: {document}")
    return timings


def _bare_batch(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[float]:
    bodies = [mlflow_delivery().body for _ in range(n)]
    timings = []
    for body in bodies:
        start = time.perf_counter_ns()
        response = client.post(url, content=body, headers=headers)
        timings.append((time.perf_counter_ns() - start) / 1e6)
        if response.status_code != 200:
            raise RuntimeError(f"stand-in answered {response.status_code} to the bare POST")
    return timings


def _core(delivery: SignedDelivery, rules: RouteRules) -> int:
    """The sans-I/O core on one delivery: verify, parse, route (what no baseline does).

    Returns the number of runs routed, for the caller to check.
    """
    now = time.time()
    received = Delivery.from_http(delivery.headers, delivery.body)
    received.verify(secrets=[WEBHOOK_SECRET], now=now, max_age=300)
    return len(route_event(rules, received.parse(now=now, max_age=300), default_project=PROJECT))


def core_timings(
    client: httpx.Client, url: str, headers: dict[str, str], rules: Path, n: int
) -> tuple[list[float], list[float]]:
    """The core's cost back to back, and the same work timed right after a bare POST returns.

    The relay's work always follows a network wait; the pair shows how much more the same code
    costs there than in a tight loop on this machine. The cause (caches, thread wake-up, the
    sandbox) is not isolated here, and the cost is real wherever the effect occurs.

    Raises:
        RuntimeError: a POST was not answered 200, or the delivery routed to no run.
    """
    parsed = load_rules_file(rules)
    loop: list[float] = []
    after_post: list[float] = []
    for block in range(0, n, 25):  # alternating blocks, so drift hits both series alike
        deliveries = [mlflow_delivery() for _ in range(min(25, n - block))]
        routed = 0
        for delivery in deliveries:
            start = time.perf_counter_ns()
            routed += _core(delivery, parsed)
            loop.append((time.perf_counter_ns() - start) / 1e3)
        for delivery in deliveries:
            status = client.post(url, content=delivery.body, headers=headers).status_code
            start = time.perf_counter_ns()
            routed += _core(delivery, parsed)
            after_post.append((time.perf_counter_ns() - start) / 1e3)
            if status != 200:
                raise RuntimeError(f"stand-in answered {status} to the bare POST")
        if routed != 2 * len(deliveries):
            raise RuntimeError(f"{2 * len(deliveries)} core calls routed {routed} runs, expected one each")
    return loop, after_post


def run_warm(workdir: Path, rules: Path, *, deliveries: int) -> WarmResult:
    standin = start_devops_standin(workdir / "warm", pat=DEVOPS_PAT)
    try:
        apply_environ(relay_settings(standin, rules))
        handler = relay_handler()
        # The baseline: what the relay itself would use (CA trust, pool, keep-alive), minus the relay.
        client = httpx.Client(
            verify=ssl.create_default_context(cafile=str(standin.tls.ca_file)),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": "mlflow-devops-relay/0.1"},
        )
        url = f"{standin.org_url}/{PROJECT}/_apis/pipelines/21/runs?api-version=7.1"
        auth = "Basic " + base64.b64encode(f":{DEVOPS_PAT}".encode()).decode()
        headers = {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}
        ids: list[str] = []
        _relay_batch(handler, WARMUP, ids)
        _bare_batch(client, url, headers, WARMUP)
        warm_ids = set(ids)
        ids.clear()
        relay_ms: list[float] = []
        logged_ms: list[float] = []
        bare_ms: list[float] = []
        relay_log = logging.getLogger("relay")
        sink = logging.NullHandler()
        relay_log.addHandler(sink)

        def logged_batch(n: int) -> list[float]:
            # host.json sends user logs at Information: the decision lines are built and handed
            # to a handler (the worker's gRPC shipping itself is not included).
            level, relay_log.level = relay_log.level, logging.INFO
            try:
                return _relay_batch(handler, n, ids)
            finally:
                relay_log.setLevel(level)

        for round_no in range((deliveries + BATCH - 1) // BATCH):
            n = min(BATCH, deliveries - round_no * BATCH)
            if round_no % 2 == 0:
                relay_ms += _relay_batch(handler, n, ids)
                logged_ms += logged_batch(n)
                bare_ms += _bare_batch(client, url, headers, n)
            else:
                bare_ms += _bare_batch(client, url, headers, n)
                logged_ms += logged_batch(n)
                relay_ms += _relay_batch(handler, n, ids)
        relay_log.removeHandler(sink)
        core_loop, core_after_post = core_timings(client, url, headers, rules, min(deliveries, 500))
        client.close()
        started = [r.template_parameters.get("delivery_id") for r in standin.runs]
        relay_started = [d for d in started if d and d not in warm_ids]
        if sorted(relay_started) != sorted(ids):
            raise RuntimeError(f"{len(ids)} relay deliveries but {len(relay_started)} runs at the stand-in")
        return WarmResult(relay_ms, logged_ms, bare_ms, len(relay_started), len(set(ids)), core_loop, core_after_post)
    finally:
        standin.stop()

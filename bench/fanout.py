"""Fan-out: one event matching 5 rules versus 1 rule, with a 100 ms Azure DevOps latency.

Two relays are built side by side from the same settings except ``ROUTES_FILE`` and called
alternately (each keeps its own warm connection pool), through ``RelayService.handle`` — the
body of the HTTP function minus the ``azure.functions`` type conversion.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DEVOPS_PAT, apply_environ, median, mlflow_delivery, start_devops_standin, write_rules
from bench.warm import relay_settings
from relay.composition import build_relay
from relay.settings import settings_from_env


@dataclass
class FanOutResult:
    latency_s: float
    one_rule_ms: list[float]
    five_rules_ms: list[float]
    runs: int
    expected_runs: int

    def summary(self) -> dict[str, Any]:
        return {
            "devops_latency_s": self.latency_s,
            "repeats": len(self.one_rule_ms),
            "one_rule_median_ms": median(self.one_rule_ms),
            "five_rules_median_ms": median(self.five_rules_ms),
            "runs_at_standin": self.runs,
            "expected_runs": self.expected_runs,
        }


def _deliver(service: Any, rules: int) -> float:
    delivery = mlflow_delivery()
    start = time.perf_counter()
    answer = service.handle(method="POST", headers=delivery.headers, body=delivery.body)
    elapsed = (time.perf_counter() - start) * 1000
    document = json.loads(answer.body_bytes())
    if answer.status != 200 or len(document.get("runs", [])) != rules:
        raise RuntimeError(f"fan-out delivery answered {answer.status}: {document}")
    return elapsed


def run_fanout(workdir: Path, *, repeats: int, latency: float = 0.1) -> FanOutResult:
    standin = start_devops_standin(workdir / "fanout", pat=DEVOPS_PAT, latency=latency)
    try:
        settings = relay_settings(standin, write_rules(workdir / "fan1.yaml", 1))
        apply_environ(settings)  # local-development secrets are read from os.environ
        one = build_relay(settings_from_env(settings))
        five = build_relay(settings_from_env({**settings, "ROUTES_FILE": str(write_rules(workdir / "fan5.yaml", 5))}))
        for _ in range(2):  # open (and keep alive) the connections each pool needs
            _deliver(one.service, 1)
            _deliver(five.service, 5)
        before = len(standin.runs)
        one_ms, five_ms = [], []
        for i in range(repeats):
            order = [(one, 1, one_ms), (five, 5, five_ms)]
            for relay, rules, sink in order if i % 2 == 0 else reversed(order):
                sink.append(_deliver(relay.service, rules))
        runs = len(standin.runs) - before
        return FanOutResult(latency, one_ms, five_ms, runs, repeats * 6)
    finally:
        apply_environ({})
        standin.stop()

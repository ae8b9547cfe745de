"""What the cold first answer imports, and how low the floor goes without what it does not need.

Two measures, in the deployment package's runtime venv (``bench/package.py``):

* **Import profile**: the cold relay process of ``bench/cold.py`` (Key Vault through the managed
  identity, Table Storage ledger) under ``python -X importtime``; the modules' own import times
  summed per top-level package (``azure.*`` by its second name), largest first. Among them the
  Queue SDK, which the first answer only needs when Azure DevOps is down and a run is queued.
* **Floors**: the trivial app of ``bench/cold.py`` after importing a set of SDKs, in fresh
  processes (median, alternating), from the floor as first measured to the floor now: with the
  Queue SDK and azure-identity; without the Queue SDK (imported only when a run is queued); and
  without azure-identity as well (``FLOOR_IMPORTS``: the relay asks the platform's identity
  endpoint itself, ``relay/managed_identity.py``). The last two import ``requests`` and
  azure-core's transport: the Key Vault and Tables clients load them on their first request.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cold import (
    _TRIVIAL_TEMPLATE,
    FLOOR_IMPORTS,
    PYDANTIC_YAML_HTTPX,
    RELAY_CHILD,
    TRIVIAL_CHILD,
    ColdSamples,
    _spawn,
)
from bench.common import DEVOPS_PAT, WEBHOOK_SECRET, clean_environ, median, mlflow_delivery, start_devops_standin
from bench.latency_proxy import LatencyProxy
from bench.network_depth import ProxiedVault, _environment
from bench.package import DeploymentPackage, deployment_package
from standins.azure import IdentityStandIn
from standins.azurite import running_azurite

_TRANSPORT = "requests, azure.core.pipeline.transport"
FLOORS = {
    "floor with the Queue SDK and azure-identity (as first measured)": (
        f"{PYDANTIC_YAML_HTTPX}; import azure.identity, azure.keyvault.secrets, azure.data.tables, azure.storage.queue"
    ),
    "floor with azure-identity (the first answer before)": (
        f"{PYDANTIC_YAML_HTTPX}; import azure.identity, azure.keyvault.secrets, azure.data.tables, {_TRANSPORT}"
    ),
    "floor (the first answer now)": FLOOR_IMPORTS,
}
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@dataclass
class ColdPathResult:
    trivial: ColdSamples = field(default_factory=ColdSamples)
    floors: dict[str, ColdSamples] = field(default_factory=dict)
    imports_ms: dict[str, float] = field(default_factory=dict)  # top-level package -> cumulative ms

    def summary(self) -> dict[str, Any]:
        base = self.trivial.summary()["wall_median_ms"]
        return {
            "trivial_wall_median_ms": base,
            "floors": {
                name: {
                    "wall_median_ms": median(s.wall_ms),
                    "ratio_to_trivial": median(s.wall_ms) / base,
                    "runs": len(s.wall_ms),
                }
                for name, s in self.floors.items()
            },
            "relay_imports_ms": dict(sorted(self.imports_ms.items(), key=lambda kv: -kv[1])),
        }


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("azure", "azurefunctions") and len(parts) > 1 else parts[0]


def import_profile(package: DeploymentPackage, env: dict[str, str]) -> dict[str, float]:
    """``-X importtime`` self times summed per top-level package, in one cold relay process.

    Raises:
        RuntimeError: the process failed.
    """
    import json

    delivery = mlflow_delivery()
    env = {**env, "BENCH_DELIVERY": json.dumps({"headers": delivery.headers, "body": delivery.body.decode()})}
    done = subprocess.run(
        [str(package.python), "-X", "importtime", "-c", RELAY_CHILD],
        env=env,
        cwd=package.app_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import profile child failed: {done.stderr[-2000:]}")
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:  # every module's own (self) time, summed per package: what each package costs itself
            name = _package_of(match.group(4))
            totals[name] = totals.get(name, 0.0) + int(match.group(1)) / 1000
    return {name: round(ms, 1) for name, ms in totals.items() if ms >= 1.0}


def run_cold_path(workdir: Path, rules: Path, *, repeats: int) -> ColdPathResult:
    """The import profile once, then ``repeats`` alternating rounds of the trivial app and the floors.

    Raises:
        RuntimeError: a child failed.
        AzuriteMissing: Azurite is not installed (``npm ci``).
    """
    package = deployment_package(workdir / "package")
    result = ColdPathResult(floors={name: ColdSamples() for name in FLOORS})
    identity = IdentityStandIn().start()
    devops = start_devops_standin(workdir / "cold-path", pat=DEVOPS_PAT)
    vault = ProxiedVault(
        devops.tls, identity, secrets={"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT}
    ).start()
    proxy = LatencyProxy(0.0)
    try:
        with running_azurite() as azurite:
            env = _environment(proxy, identity, vault, devops, azurite.ports, rules, package.app_dir)
            _spawn(package, RELAY_CHILD, env)  # creates the ledger's table
            result.imports_ms = import_profile(package, env)
    finally:
        proxy.stop()
        vault.stop()
        devops.stop()
        identity.stop()
    trivial_env = clean_environ(os.environ, {"PYTHONPATH": str(package.app_dir)})
    kinds = [(TRIVIAL_CHILD, result.trivial)] + [
        (_TRIVIAL_TEMPLATE.replace("_SDK_IMPORTS = None", imports), result.floors[name])
        for name, imports in FLOORS.items()
    ]
    _spawn(package, TRIVIAL_CHILD, trivial_env)
    for i in range(repeats):
        for code, sink in kinds if i % 2 == 0 else reversed(kinds):
            sink.add(*_spawn(package, code, trivial_env))
    return result

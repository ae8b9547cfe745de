"""Against the seed's approach, warm: the original example's client beside the relay, per delivery.

The seed peer (``bench/seed_app``: the ``azure-devops`` SDK with a PAT, in its own venv
``.venv-seed``) and the relay (the deployment package in ``.venv-bench``) each run in a child
process of the same shape: import the app, index it as the worker does, then call the registered
function with signed deliveries the parent made, one after another, timing each call. The first
``WARMUP`` calls (the cold first answer among them, measured by ``bench/cold.py``) are left out.
All post to the same Azure DevOps stand-in; the children alternate (ABC, CBA, ...).

Variants: the seed; the relay as deployed (Key Vault through the identity stand-in, ledger in
Table Storage on Azurite: a claim and a record around each POST); the relay with secrets from the
environment and the in-memory ledger (the seed's I/O: one POST). The seed checks no signature
and keeps no ledger (see its docstring), so it does less per delivery than either relay.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cold import SEED_PIPELINE_ID
from bench.common import (
    DEVOPS_PAT,
    PROJECT,
    WEBHOOK_SECRET,
    azure_like_ca_bundle,
    child_report,
    clean_environ,
    mlflow_delivery,
    percentile,
    start_devops_standin,
)
from bench.package import DeploymentPackage, deployment_package, seed_package
from standins.azure import IDENTITY_HEADER, USER_ASSIGNED_CLIENT_ID, IdentityStandIn, KeyVaultStandIn
from standins.azurite import running_azurite

WARMUP = 20
CHILDREN_PER_VARIANT = 4

WARM_CHILD = """
import json, os, tempfile, time
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", tempfile.mkdtemp(prefix="seed-cache-"))
import azure.functions as func
import function_app

handler = next(f for f in function_app.app.get_functions()
               if f.get_function_name() == "MLflowWebHookTransition").get_user_function()
with open(os.environ["BENCH_DELIVERIES"], encoding="utf-8") as file:
    deliveries = json.load(file)
timings = []
for delivery in deliveries:
    request = func.HttpRequest(method="POST", url="http://localhost:7071/api/MLflowWebHookTransition",
                               headers=delivery["headers"], params={}, route_params={},
                               body=delivery["body"].encode())
    start = time.perf_counter_ns()
    response = handler(request)
    timings.append((time.perf_counter_ns() - start) / 1e6)
    document = json.loads(response.get_body())
    if response.status_code != 200 or document.get("status") != "triggered":
        raise SystemExit(f"answered {response.status_code}: {document}")
print(json.dumps({"ms": timings[int(os.environ["BENCH_WARMUP"]):]}))
"""


@dataclass
class PeerSamples:
    ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"deliveries": len(self.ms), "p50_ms": percentile(self.ms, 50), "p99_ms": percentile(self.ms, 99)}


@dataclass
class SeedWarmResult:
    variants: dict[str, PeerSamples]
    runs_at_standin: int

    def summary(self) -> dict[str, Any]:
        return {
            "warmup": WARMUP,
            "runs_at_standin": self.runs_at_standin,
            **{name: samples.summary() for name, samples in self.variants.items()},
        }


def _child(package: DeploymentPackage, env: dict[str, str], workdir: Path, count: int) -> list[float]:
    deliveries = [mlflow_delivery() for _ in range(WARMUP + count)]
    path = workdir / "deliveries.json"
    path.write_text(json.dumps([{"headers": d.headers, "body": d.body.decode()} for d in deliveries]), "utf-8")
    env = {**env, "BENCH_DELIVERIES": str(path), "BENCH_WARMUP": str(WARMUP)}
    report = child_report(
        [str(package.python), "-c", WARM_CHILD], env=env, cwd=package.app_dir, timeout=600, what="warm peer child"
    )
    return list(report["ms"])


def run_seed_warm(workdir: Path, rules: Path, *, deliveries: int) -> SeedWarmResult:
    """``deliveries`` timed calls per variant, in ``CHILDREN_PER_VARIANT`` alternating children each.

    Raises:
        RuntimeError: a child failed or answered other than 200 "triggered", or the runs at the
            stand-in do not add up to one per delivery.
        AzuriteMissing: Azurite is not installed (``npm ci``).
    """
    relay, seed = deployment_package(workdir / "package"), seed_package(workdir / "seed")
    identity = IdentityStandIn().start()
    devops = start_devops_standin(workdir / "seed-warm", pat=DEVOPS_PAT)
    secrets = {"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT}
    vault = KeyVaultStandIn(devops.tls, identity, secrets=secrets).start()
    ca = str(azure_like_ca_bundle(devops.tls.ca_file, workdir / "seed-warm"))
    per_child = max(1, deliveries // CHILDREN_PER_VARIANT)
    try:
        with running_azurite() as azurite:
            base = clean_environ(os.environ, {"DEVOPS_ORG_URL": devops.org_url, "DEVOPS_PROJECT": PROJECT})
            # PAT auth in every variant: like for like with the seed, which only knows PATs.
            relay_common = {
                **base,
                "DEVOPS_AUTH": "pat",
                "DEVOPS_CA_BUNDLE": ca,
                "ROUTES_FILE": str(rules),
                "PYTHONPATH": str(relay.app_dir),
            }
            variants = {
                "seed: azure-devops SDK, PAT": (
                    seed,
                    {
                        **base,
                        "DEVOPS_PAT": DEVOPS_PAT,
                        "SEED_PIPELINE_ID": str(SEED_PIPELINE_ID),
                        "REQUESTS_CA_BUNDLE": ca,
                        "PYTHONPATH": str(seed.app_dir),
                    },
                ),
                "relay as deployed (Key Vault, Table Storage ledger)": (
                    relay,
                    {
                        **relay_common,
                        "AzureWebJobsStorage": azurite.connection_string,
                        "KEY_VAULT_URL": vault.vault_url,
                        "IDENTITY_ENDPOINT": identity.endpoint,
                        "IDENTITY_HEADER": IDENTITY_HEADER,
                        "AZURE_CLIENT_ID": USER_ASSIGNED_CLIENT_ID,
                        "REQUESTS_CA_BUNDLE": ca,
                        "SSL_CERT_FILE": ca,
                    },
                ),
                "relay, secrets from env, in-memory ledger": (
                    relay,
                    {**relay_common, "WEBHOOK_SECRET": WEBHOOK_SECRET, "DEVOPS_PAT": DEVOPS_PAT},
                ),
            }
            samples = {name: PeerSamples() for name in variants}
            before = len(devops.runs)
            for i in range(CHILDREN_PER_VARIANT):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in order:
                    package, env = variants[name]
                    samples[name].ms += _child(package, env, workdir, per_child)
    finally:
        vault.stop()
        devops.stop()
        identity.stop()
    runs = len(devops.runs) - before
    expected = len(variants) * CHILDREN_PER_VARIANT * (WARMUP + per_child)
    if runs != expected:
        raise RuntimeError(f"{expected} warm peer deliveries but {runs} runs at the stand-in")
    return SeedWarmResult(samples, runs)

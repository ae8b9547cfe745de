"""Cold start: fresh ``python -c`` processes, the relay's versus a trivial function app's.

Relay process: import ``azure.functions``, import ``function_app``, index the functions (as
the worker does: ``app.get_functions()``), answer one signed delivery. It is configured as the
template deploys it: secrets from the Key Vault stand-in through the managed-identity stand-in
(``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER`` and the user-assigned ``AZURE_CLIENT_ID``), and the
delivery ledger in Table Storage (Azurite, the table already there, as the template provisions
it). So its first answer pays the SDK imports (Key Vault, Tables), a token, the vault's
challenge and two reads, the ledger's claim and record, and a TLS handshake and POST to DevOps.
One difference from Azure remains: Azurite is reached with its account key, where Azure uses
the identity (one more token, which the relay asks for ahead). A variant with secrets from the
environment shows the Key Vault share.

Trust: in Azure the Key Vault and Tables clients (requests) load certifi's CA bundle into every
new TLS connection, and the DevOps client (httpx) once, 15-20 ms each here. So the children trust
a bundle of that size (certifi's plus the stand-ins' CA, ``azure_like_ca_bundle``); one more
relay series trusts the stand-ins' one-certificate CA alone, as the runs before this one did.

Trivial process: import ``azure.functions``, register and index one HTTP function that
answers a constant, call it once with the same request.

Floor process: the trivial one after importing the third-party packages the relay's first
answer loads (``FLOOR_IMPORTS``: pydantic, PyYAML, httpx with httpcore/h11, the Key Vault and
Tables SDKs, and requests with azure-core's transport, which those clients load on their first
request) and using none of them. Every child reports the distributions it loaded, and the run
fails if the relay loaded one the floor did not: the floor stays a true lower bound for any
relay on these dependencies. The gap above it is the relay's own modules and its I/O.

Seed peer: the original example's client (``bench/seed_app``: the ``azure-devops`` SDK with a
PAT from the environment) in its own venv (``.venv-seed``), answering the same delivery the same
way; each process gets an empty SDK route cache, as a new instance has.

All but the seed run in a copy of the deployment package with a venv of ``requirements.txt``
only (``bench/package.py``), the file set and packages the remote build deploys.

The parent records the wall time from just before spawning to the moment the child has its
answer (interpreter start-up included; the distribution report and shutdown excluded). Runs
alternate.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DEVOPS_PAT,
    PROJECT,
    WEBHOOK_SECRET,
    azure_like_ca_bundle,
    child_report,
    clean_environ,
    median,
    mlflow_delivery,
    start_devops_standin,
)
from bench.package import DeploymentPackage, deployment_package, seed_package
from standins.azure import IDENTITY_HEADER, USER_ASSIGNED_CLIENT_ID, IdentityStandIn, KeyVaultStandIn
from standins.azurite import running_azurite

SEED_PIPELINE_ID = 21  # the first rule's pipeline (``write_rules``)

_PRELUDE = """
import json, os, sys, time
t0 = time.perf_counter()
import azure.functions as func
t1 = time.perf_counter()
delivery = json.loads(os.environ["BENCH_DELIVERY"])
"""

# After the answer is timed: which installed distributions the process loaded modules from.
_REPORT = """
import importlib.metadata, sysconfig
owner = {}  # file path relative to site-packages -> distribution
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"].lower()
    owner.update((str(path), name) for path in dist.files or ())
site = sysconfig.get_paths()["purelib"]
files = (os.path.relpath(m.__file__, site) for m in list(sys.modules.values()) if getattr(m, "__file__", None))
report["distributions"] = sorted({owner[f] for f in files if f in owner})
print(json.dumps(report), flush=True)
"""

# The trivial app; with the imports line filled in, the floor.
_TRIVIAL_TEMPLATE = (
    _PRELUDE
    + """
t_sdk = time.perf_counter()
_SDK_IMPORTS = None
t2 = time.perf_counter()
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

@app.route(route="ping", methods=["POST"])
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b'{"status": "ok"}', status_code=200, mimetype="application/json")

handler = app.get_functions()[0].get_user_function()
t3 = time.perf_counter()
request = func.HttpRequest(method="POST", url="http://localhost:7071/api/ping", headers=delivery["headers"],
                           params={}, route_params={}, body=delivery["body"].encode())
response = handler(request)
t4 = time.perf_counter()
report = {"answered_at": time.time(), "status": response.status_code, "timings": {
    "import_azure_functions": t1 - t0, "import_sdks": t2 - t_sdk, "index": t3 - t2, "first_answer": t4 - t3}}
"""
    + _REPORT
)
TRIVIAL_CHILD = _TRIVIAL_TEMPLATE
PYDANTIC_YAML_HTTPX = "from pydantic import BaseModel, Field, field_validator; import yaml, httpx, httpcore"
FLOOR_IMPORTS = (
    f"{PYDANTIC_YAML_HTTPX}; import azure.keyvault.secrets, azure.data.tables, requests, azure.core.pipeline.transport"
)
FLOOR_CHILD = _TRIVIAL_TEMPLATE.replace("_SDK_IMPORTS = None", FLOOR_IMPORTS)

RELAY_CHILD = (
    _PRELUDE
    + """
import function_app
t2 = time.perf_counter()
# As the worker indexes (relay_tools is not in the package): the registered function by name.
handler = next(f for f in function_app.app.get_functions()
               if f.get_function_name() == "MLflowWebHookTransition").get_user_function()
t3 = time.perf_counter()
request = func.HttpRequest(method="POST", url="http://localhost:7071/api/MLflowWebHookTransition",
                           headers=delivery["headers"], params={}, route_params={}, body=delivery["body"].encode())
response = handler(request)
t4 = time.perf_counter()
report = {"answered_at": time.time(), "status": response.status_code, "answer": response.get_body().decode(),
          "timings": {"import_azure_functions": t1 - t0, "import_function_app": t2 - t1, "index": t3 - t2,
                      "first_answer": t4 - t3}}
"""
    + _REPORT
)
# The same child for the seed app, with an empty SDK route cache (``~/.azure-devops``) per process.
SEED_CHILD = (
    "import os, tempfile\nos.environ['AZURE_DEVOPS_CACHE_DIR'] = tempfile.mkdtemp(prefix='seed-cache-')\n" + RELAY_CHILD
)


@dataclass
class ColdSamples:
    wall_ms: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    distributions: set[str] = field(default_factory=set)

    def add(self, wall_ms: float, report: dict[str, Any]) -> None:
        self.wall_ms.append(wall_ms)
        for key, seconds in report["timings"].items():
            self.parts.setdefault(key, []).append(seconds * 1000)
        self.distributions.update(report["distributions"])

    def summary(self) -> dict[str, Any]:
        return {
            "runs": len(self.wall_ms),
            "wall_median_ms": median(self.wall_ms),
            **{f"{k}_median_ms": median(v) for k, v in self.parts.items()},
            "distributions": sorted(self.distributions),
        }


@dataclass
class ColdResult:
    trivial: ColdSamples
    floor: ColdSamples
    relay_key_vault: ColdSamples
    relay_env_secrets: ColdSamples
    relay_standin_ca: ColdSamples
    seed: ColdSamples
    runs_at_standin: int

    @property
    def import_delta_ms(self) -> float:
        """What ``import function_app`` adds after ``import azure.functions`` (median, relay processes)."""
        return median(
            self.relay_key_vault.parts["import_function_app"] + self.relay_env_secrets.parts["import_function_app"]
        )

    def summary(self) -> dict[str, Any]:
        return {
            "trivial": self.trivial.summary(),
            "floor": self.floor.summary(),
            "relay_key_vault": self.relay_key_vault.summary(),
            "relay_env_secrets": self.relay_env_secrets.summary(),
            "relay_standin_ca": self.relay_standin_ca.summary(),
            "seed": self.seed.summary(),
            "import_function_app_median_ms": self.import_delta_ms,
            "runs_at_standin": self.runs_at_standin,
        }


def _spawn(package: DeploymentPackage, code: str, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    delivery = mlflow_delivery()
    env = {**env, "BENCH_DELIVERY": json.dumps({"headers": delivery.headers, "body": delivery.body.decode()})}
    started = time.time()
    report = child_report(
        [str(package.python), "-c", code], env=env, cwd=package.app_dir, timeout=120, what="cold child"
    )
    if report["status"] != 200:
        raise RuntimeError(f"cold child answered {report['status']}: {report.get('answer')}")
    return (report["answered_at"] - started) * 1000, report


def run_cold(workdir: Path, rules: Path, *, repeats: int) -> ColdResult:
    """Spawn ``repeats`` rounds of the five kinds of process; see the module docstring.

    Raises:
        RuntimeError: a child failed or answered other than 200, the runs or vault reads at the
            stand-ins do not add up, or the relay loaded a distribution the floor did not.
        AzuriteMissing: Azurite is not installed (``npm ci``).
    """
    package = deployment_package(workdir / "package")
    seed = seed_package(workdir / "seed")
    identity = IdentityStandIn().start()
    devops = start_devops_standin(workdir / "cold", pat=DEVOPS_PAT)
    secrets = {"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT}
    vault = KeyVaultStandIn(devops.tls, identity, secrets=secrets).start()
    ca, standin_ca = str(azure_like_ca_bundle(devops.tls.ca_file, workdir / "cold")), str(devops.tls.ca_file)
    try:
        with running_azurite() as azurite:
            common = {
                "DEVOPS_ORG_URL": devops.org_url,
                "DEVOPS_PROJECT": PROJECT,
                "DEVOPS_CA_BUNDLE": ca,
                "DEVOPS_AUTH": "pat",
                "ROUTES_FILE": str(rules),
                "PYTHONPATH": str(package.app_dir),
                "AzureWebJobsStorage": azurite.connection_string,
            }
            base = clean_environ(os.environ, {})
            key_vault_env = {
                **base,
                **common,
                "KEY_VAULT_URL": vault.vault_url,
                "IDENTITY_ENDPOINT": identity.endpoint,
                "IDENTITY_HEADER": IDENTITY_HEADER,
                "AZURE_CLIENT_ID": USER_ASSIGNED_CLIENT_ID,
                "REQUESTS_CA_BUNDLE": ca,
                "SSL_CERT_FILE": ca,
            }
            standin_ca_env = {
                **key_vault_env,
                "DEVOPS_CA_BUNDLE": standin_ca,
                "REQUESTS_CA_BUNDLE": standin_ca,
                "SSL_CERT_FILE": standin_ca,
            }
            env_secrets_env = {**base, **common, "WEBHOOK_SECRET": WEBHOOK_SECRET, "DEVOPS_PAT": DEVOPS_PAT}
            trivial_env = {**base, "PYTHONPATH": str(package.app_dir)}
            seed_env = {
                **base,
                "DEVOPS_ORG_URL": devops.org_url,
                "DEVOPS_PROJECT": PROJECT,
                "DEVOPS_PAT": DEVOPS_PAT,
                "SEED_PIPELINE_ID": str(SEED_PIPELINE_ID),
                "REQUESTS_CA_BUNDLE": ca,
                "PYTHONPATH": str(seed.app_dir),
            }
            result = ColdResult(
                ColdSamples(), ColdSamples(), ColdSamples(), ColdSamples(), ColdSamples(), ColdSamples(), 0
            )
            _spawn(package, TRIVIAL_CHILD, trivial_env)  # first touches of the page cache are not a cold *instance*
            _spawn(package, RELAY_CHILD, key_vault_env)  # ... and this one also creates the ledger's table
            _spawn(seed, SEED_CHILD, seed_env)
            before = len(devops.runs)
            for i in range(repeats):
                kinds = [
                    (package, TRIVIAL_CHILD, trivial_env, result.trivial),
                    (package, FLOOR_CHILD, trivial_env, result.floor),
                    (package, RELAY_CHILD, key_vault_env, result.relay_key_vault),
                    (package, RELAY_CHILD, env_secrets_env, result.relay_env_secrets),
                    (package, RELAY_CHILD, standin_ca_env, result.relay_standin_ca),
                    (seed, SEED_CHILD, seed_env, result.seed),
                ]
                for where, code, env, sink in kinds if i % 2 == 0 else reversed(kinds):
                    sink.add(*_spawn(where, code, env))
    finally:
        vault.stop()
        devops.stop()
        identity.stop()
    result.runs_at_standin = len(devops.runs) - before
    if result.runs_at_standin != 4 * repeats:
        raise RuntimeError(
            f"{4 * repeats} cold deliveries (relay and seed) but {result.runs_at_standin} runs at the stand-in"
        )
    if vault.reads["mlflow-webhook-secret"] < 2 * repeats + 1:
        raise RuntimeError("the Key Vault cold runs did not read the vault")
    missing = result.relay_key_vault.distributions - result.floor.distributions
    if missing:
        raise RuntimeError(f"the floor does not import {sorted(missing)}, which the relay's first answer loads")
    return result

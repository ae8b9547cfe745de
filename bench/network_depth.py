"""Network depth of the cold first answer: how many round trips it waits on, one after another.

The cold relay process of ``bench/cold.py`` (as deployed: Key Vault through the managed identity,
ledger in Table Storage on Azurite, PAT auth to Azure DevOps over TLS) runs with every dependency
behind ``LatencyProxy``: each client flight (a TCP connect, a TLS handshake flight, a request)
costs ``delay``. The same process runs at delay 0 and at ``delay``, alternating; the difference of
the median first-answer times, divided by ``delay``, is the number of round trips on its critical
path. The proxy's log of the last run says which ones they were, per service, in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cold import RELAY_CHILD, _spawn
from bench.common import (
    DEVOPS_PAT,
    PROJECT,
    WEBHOOK_SECRET,
    azure_like_ca_bundle,
    clean_environ,
    median,
    start_devops_standin,
)
from bench.latency_proxy import LatencyProxy
from bench.package import deployment_package
from relay.storage_clients import azurite_connection_string
from standins.azure import IDENTITY_HEADER, USER_ASSIGNED_CLIENT_ID, IdentityStandIn, KeyVaultStandIn
from standins.azurite import running_azurite


@dataclass
class ProxiedVault(KeyVaultStandIn):
    """The Key Vault stand-in reached through the proxy: its challenge names the proxy's port."""

    proxy_port: int = 0

    @property
    def resource(self) -> str:
        return f"https://0.0.1:{self.proxy_port}"


@dataclass
class DepthResult:
    delay_s: float
    first_answer_ms: dict[float, list[float]] = field(default_factory=dict)
    sequence: list[dict[str, Any]] = field(default_factory=list)  # the last run's flights at ``delay_s``

    @property
    def round_trips(self) -> float:
        slow, fast = median(self.first_answer_ms[self.delay_s]), median(self.first_answer_ms[0.0])
        return (slow - fast) / (self.delay_s * 1000)

    def summary(self) -> dict[str, Any]:
        per_service: dict[str, dict[str, int]] = {}
        for flight in self.sequence:
            counts = per_service.setdefault(flight["service"], {"connect": 0, "send": 0})
            counts[flight["kind"]] += 1
        return {
            "delay_ms": self.delay_s * 1000,
            "runs": len(self.first_answer_ms[0.0]),
            "first_answer_median_ms": {f"{d * 1000:.0f}": median(v) for d, v in self.first_answer_ms.items()},
            "sequential_round_trips": round(self.round_trips, 1),
            "flights_per_service": per_service,
            "sequence": self.sequence,
        }


def _environment(
    proxy: LatencyProxy,
    identity: IdentityStandIn,
    vault: ProxiedVault,
    devops: Any,
    ports: dict[str, int],
    rules: Path,
    app_dir: Path,
) -> dict[str, str]:
    identity_port = proxy.add("identity", int(identity._server.server_address[1]))  # type: ignore[union-attr]
    vault.proxy_port = proxy.add("keyvault", vault.port)
    devops_port = proxy.add("devops", devops.port)
    storage = azurite_connection_string(
        blob_port=proxy.add("blob", ports["blob"]),
        queue_port=proxy.add("queue", ports["queue"]),
        table_port=proxy.add("table", ports["table"]),
    )
    ca = str(azure_like_ca_bundle(devops.tls.ca_file, app_dir.parent))
    return clean_environ(
        os.environ,
        {
            "DEVOPS_ORG_URL": devops.org_url.replace(f":{devops.port}/", f":{devops_port}/"),
            # The PAT from Key Vault (DEVOPS_AUTH=pat): the stand-in admits no identity token as a member.
            "DEVOPS_PROJECT": PROJECT,
            "DEVOPS_AUTH": "pat",
            "DEVOPS_CA_BUNDLE": ca,
            "ROUTES_FILE": str(rules),
            "PYTHONPATH": str(app_dir),
            "AzureWebJobsStorage": storage,
            "KEY_VAULT_URL": f"https://127.0.0.1:{vault.proxy_port}",
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{identity_port}/msi/token",
            "IDENTITY_HEADER": IDENTITY_HEADER,
            "AZURE_CLIENT_ID": USER_ASSIGNED_CLIENT_ID,
            "REQUESTS_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca,
        },
    )


def run_network_depth(workdir: Path, rules: Path, *, repeats: int, delay: float = 0.025) -> DepthResult:
    """Alternate cold relay processes at delay 0 and ``delay``; see the module docstring.

    Raises:
        RuntimeError: a child failed or answered other than 200.
        AzuriteMissing: Azurite is not installed (``npm ci``).
    """
    package = deployment_package(workdir / "package")
    identity = IdentityStandIn().start()
    devops = start_devops_standin(workdir / "depth", pat=DEVOPS_PAT)
    secrets = {"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT}
    result = DepthResult(delay)
    proxies: list[LatencyProxy] = []
    try:
        with running_azurite() as azurite:
            setups = []
            for d in (0.0, delay):
                proxy = LatencyProxy(d)
                proxies.append(proxy)
                vault = ProxiedVault(devops.tls, identity, secrets=secrets).start()
                env = _environment(proxy, identity, vault, devops, azurite.ports, rules, package.app_dir)
                setups.append((d, proxy, vault, env))
                result.first_answer_ms[d] = []
            _spawn(package, RELAY_CHILD, setups[0][3])  # creates the ledger's table: not a cold instance's work
            for i in range(repeats):
                for d, proxy, _vault, env in setups if i % 2 == 0 else reversed(setups):
                    proxy.clear()
                    _wall, report = _spawn(package, RELAY_CHILD, env)
                    result.first_answer_ms[d].append(report["timings"]["first_answer"] * 1000)
            slow = setups[1][1]
            start = min((f.at for f in slow.flights), default=0.0)
            result.sequence = [
                {
                    "service": f.service,
                    "connection": f.connection,
                    "kind": f.kind,
                    "at_ms": round((f.at - start) * 1000, 1),
                    "bytes": f.size,
                }
                for f in slow.flights
            ]
            for _d, _proxy, vault, _env in setups:
                vault.stop()
    finally:
        for proxy in proxies:
            proxy.stop()
        devops.stop()
        identity.stop()
    return result

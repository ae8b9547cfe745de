"""Amortisation: Key Vault reads and Entra token acquisitions over many deliveries.

The relay runs as in Azure: secrets from Key Vault, DevOps authenticated with the managed
identity (DEVOPS_AUTH=managed-identity), both through the real azure-identity and
azure-keyvault-secrets code against loopback stand-ins. Deliveries arrive on 8 threads, as the
Functions worker's thread pool calls a sync function, so first-use races are exercised too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PROJECT, WEBHOOK_SECRET, apply_environ, mlflow_delivery, start_devops_standin
from bench.warm import http_request, relay_handler
from devops.auth import AZURE_DEVOPS_SCOPE
from relay.settings import DEFAULT_WEBHOOK_SECRET_NAME as WEBHOOK_SECRET_NAME
from standins.azure import IDENTITY_HEADER, IdentityStandIn, KeyVaultStandIn

DEVOPS_RESOURCE = AZURE_DEVOPS_SCOPE.removesuffix("/.default")


@dataclass
class AmortisationResult:
    deliveries: int
    runs: int
    vault_reads: dict[str, int]
    vault_challenges: int
    tokens: dict[str, int]
    relay_secret_reads: int
    relay_token_acquisitions: int
    elapsed_s: float
    ttl_s: float

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_amortisation(workdir: Path, rules: Path, *, deliveries: int, threads: int = 8) -> AmortisationResult:
    import time

    import relay.composition

    identity = IdentityStandIn().start()
    devops = start_devops_standin(workdir / "amortise", pat=None, bearer_token=identity.token_for(DEVOPS_RESOURCE))
    vault = KeyVaultStandIn(devops.tls, identity, secrets={WEBHOOK_SECRET_NAME: WEBHOOK_SECRET}).start()
    try:
        relay.composition.azure_credential.cache_clear()
        apply_environ(
            {
                "DEVOPS_ORG_URL": devops.org_url,
                "DEVOPS_PROJECT": PROJECT,
                "DEVOPS_AUTH": "managed-identity",
                "DEVOPS_CA_BUNDLE": str(devops.tls.ca_file),
                "KEY_VAULT_URL": vault.vault_url,
                "IDENTITY_ENDPOINT": identity.endpoint,
                "IDENTITY_HEADER": IDENTITY_HEADER,
                "REQUESTS_CA_BUNDLE": str(devops.tls.ca_file),
                "ROUTES_FILE": str(rules),
            }
        )
        handler = relay_handler()
        requests = []
        ids = []
        for _ in range(deliveries):
            delivery = mlflow_delivery()
            ids.append(delivery.delivery_id)
            requests.append(http_request(delivery))
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            statuses = [r.status_code for r in pool.map(handler, requests)]
        elapsed = time.perf_counter() - start
        bad = [s for s in statuses if s != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} deliveries were not answered 200 (first: {bad[0]})")
        started = sorted(r.template_parameters.get("delivery_id", "") for r in devops.runs)
        if started != sorted(ids):
            raise RuntimeError(f"{deliveries} deliveries but {len(started)} runs at the stand-in")
        built = relay.composition.current_relay()
        # Private attributes, read only here, to cross-check the stand-ins' counters.
        secret_reads = built.service.verifier.secrets.reads
        acquisitions = built.service._starter._auth.acquisitions  # type: ignore[attr-defined]
        ttl = relay.composition.load_settings().secret_cache_seconds
        return AmortisationResult(
            deliveries,
            len(started),
            dict(vault.reads),
            vault.challenges,
            {("Azure DevOps" if r == DEVOPS_RESOURCE else "Key Vault"): n for r, n in identity.tokens.items()},
            secret_reads,
            acquisitions,
            elapsed,
            ttl,
        )
    finally:
        apply_environ({})
        relay.composition.azure_credential.cache_clear()
        vault.stop()
        devops.stop()
        identity.stop()

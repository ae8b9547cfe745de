"""Key Vault down or hanging, through the real ``SecretClient`` and managed-identity credential
against the TLS Key Vault and identity stand-ins: deliveries that need a secret answer 503 with
Retry-After within 2 s, and the vault sees one read in flight, whatever the concurrency."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from standins.azure import IDENTITY_HEADER, IdentityStandIn, KeyVaultStandIn
from standins.harness import DEVOPS_PAT, WEBHOOK_SECRET, Answer, RelayHarness, mlflow_delivery
from standins.scenarios import wait_until

pytestmark = pytest.mark.azurite

CONCURRENT = 6


@pytest.fixture
def identity() -> Iterator[IdentityStandIn]:
    standin = IdentityStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def vault_relay(
    harness: Callable[..., RelayHarness], identity: IdentityStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RelayHarness, KeyVaultStandIn]]:
    from standins.tls import make_loopback_tls

    tls = make_loopback_tls(tmp_path_factory.mktemp("vault-tls"))
    vault = KeyVaultStandIn(
        tls, identity, secrets={"mlflow-webhook-secret": WEBHOOK_SECRET, "devops-pat": DEVOPS_PAT}
    ).start()
    relay = harness(
        deadline=3.0,
        settings={
            "KEY_VAULT_URL": vault.vault_url,
            "IDENTITY_ENDPOINT": identity.endpoint,
            "IDENTITY_HEADER": IDENTITY_HEADER,
            "REQUESTS_CA_BUNDLE": str(tls.ca_file),
        },
    )
    yield relay, vault
    vault.stop()


def concurrently(relay: RelayHarness, count: int) -> list[Answer]:
    deliveries = [mlflow_delivery(version=n) for n in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(relay.post, deliveries))


def test_hanging_vault_answers_503_within_two_seconds_with_one_read_in_flight(
    vault_relay: tuple[RelayHarness, KeyVaultStandIn],
) -> None:
    relay, vault = vault_relay
    vault.delay = 4.0  # longer than any request may wait
    answers = concurrently(relay, CONCURRENT)
    assert [a.status for a in answers] == [503] * CONCURRENT, [a.body for a in answers]
    assert max(a.seconds for a in answers) < 2.0, [round(a.seconds, 2) for a in answers]
    assert all(a.body["error"] == "SecretsUnavailable" and int(a.headers["Retry-After"]) >= 1 for a in answers)
    assert vault.max_in_flight == 1 and vault.requests == 1
    assert relay.standin.api_requests == []


def test_failed_read_is_remembered_and_answered_at_once(vault_relay: tuple[RelayHarness, KeyVaultStandIn]) -> None:
    relay, vault = vault_relay
    vault.delay, vault.fail_status = 0.2, 500
    [first] = concurrently(relay, 1)
    assert first.status == 503 and first.seconds < 2.0
    wait_until(lambda: vault.max_in_flight == 1 and vault.requests >= 1, timeout=5)
    reads = vault.requests
    again = concurrently(relay, CONCURRENT)
    assert [a.status for a in again] == [503] * CONCURRENT
    assert max(a.seconds for a in again) < 0.5, [round(a.seconds, 2) for a in again]
    assert all(1 <= int(a.headers["Retry-After"]) <= 30 for a in again)
    assert vault.requests == reads, "a remembered failure must not call the vault again"
    assert vault.max_in_flight == 1


def test_vault_back_serves_the_secret_and_the_run_starts(vault_relay: tuple[RelayHarness, KeyVaultStandIn]) -> None:
    relay, vault = vault_relay
    deliveries = [mlflow_delivery(version=n) for n in range(CONCURRENT)]
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        sent = list(pool.map(relay.send, deliveries))  # re-sent on 503, as MLflow does
    answers = [chain[-1] for chain in sent]
    assert {a.status for a in answers} == {200}, [(a.status, round(a.seconds, 2), a.body) for a in answers]
    # A storage read may pass the compressed 0.4 s timeout on a loaded machine, and that copy is
    # re-sent; the vault must never be the cause of a retry once it is back.
    retried = [a.body for chain in sent for a in chain[:-1]]
    assert all("Timeout" in str(b.get("detail")) and b.get("error") != "SecretsUnavailable" for b in retried), retried
    assert vault.reads["mlflow-webhook-secret"] == 1 and vault.reads["devops-pat"] == 1
    assert len(relay.standin.runs) == 2 * CONCURRENT

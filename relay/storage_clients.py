"""Clients for the Function App's own storage account (``AzureWebJobsStorage``).

Reached by connection string locally (Azurite) or by managed identity in Azure. The SDKs'
retry policies are bounded (``relay.budgets``) so a storage call fits inside the lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relay import budgets
from relay.ports import StorageUnavailable
from relay.settings import Settings

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

# Azurite's published, well-known development account and key: not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def client_options() -> dict[str, Any]:
    """The SDK timeouts and retries that bound one storage call (``relay.budgets``)."""
    return budgets.fixed_durations().storage_client_options()


def azurite_connection_string(*, blob_port: int = 10000, queue_port: int = 10001, table_port: int = 10002) -> str:
    """The connection string for Azurite on loopback (what ``UseDevelopmentStorage=true`` means)."""
    base = f"http://127.0.0.1:{{}}/{AZURITE_ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint={base.format(blob_port)};QueueEndpoint={base.format(queue_port)};"
        f"TableEndpoint={base.format(table_port)};"
    )


def _connection_string(settings: Settings) -> str | None:
    conn = settings.storage_connection_string
    if conn and conn.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
        return azurite_connection_string()
    return conn


def table_service(settings: Settings, *, credential_factory: Callable[[], Any]) -> TableServiceClient:
    """The table service client for the host storage account."""
    from azure.data.tables import TableServiceClient

    conn = _connection_string(settings)
    if conn:
        return TableServiceClient.from_connection_string(conn, **client_options())
    uri = settings.storage_table_uri or f"https://{settings.storage_account_name}.table.core.windows.net"
    return TableServiceClient(endpoint=uri, credential=credential_factory(), **client_options())


def queue_service(settings: Settings, *, credential_factory: Callable[[], Any]) -> QueueServiceClient:
    """The queue service client for the host storage account (imported only when a run is queued)."""
    from azure.storage.queue import LinearRetry, QueueServiceClient

    fixed = budgets.fixed_durations()
    # The queue SDK ignores retry_backoff_factor: its default ExponentialRetry waits 12-18 s before
    # a retry, past every budget. A linear policy without jitter keeps the wait the budgets count.
    options = {
        **client_options(),
        "retry_policy": LinearRetry(
            backoff=fixed.storage_retry_backoff,  # type: ignore[arg-type]  # annotated int, used as seconds
            retry_total=fixed.storage_retry_total,
            random_jitter_range=0,
        ),
    }
    conn = _connection_string(settings)
    if conn:
        return QueueServiceClient.from_connection_string(conn, **options)
    uri = settings.storage_queue_uri or f"https://{settings.storage_account_name}.queue.core.windows.net"
    return QueueServiceClient(account_url=uri, credential=credential_factory(), **options)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn the SDK's transport and service errors into ``StorageUnavailable``.

    Conflicts and precondition failures (exists, not found, modified) pass through: callers
    decide what they mean.
    """
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    try:
        yield
    except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError):
        raise
    except AzureError as exc:
        raise StorageUnavailable(f"{what} unavailable ({type(exc).__name__})", retry_after=10) from exc

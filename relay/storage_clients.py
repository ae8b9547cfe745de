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

CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": budgets.STORAGE_RETRY_TOTAL,
    "retry_backoff_factor": budgets.STORAGE_RETRY_BACKOFF,
    "connection_timeout": budgets.STORAGE_CONNECT_TIMEOUT,
    "read_timeout": budgets.STORAGE_READ_TIMEOUT,
}


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
        return TableServiceClient.from_connection_string(conn, **CLIENT_OPTIONS)
    uri = settings.storage_table_uri or f"https://{settings.storage_account_name}.table.core.windows.net"
    return TableServiceClient(endpoint=uri, credential=credential_factory(), **CLIENT_OPTIONS)


def queue_service(settings: Settings, *, credential_factory: Callable[[], Any]) -> QueueServiceClient:
    """The queue service client for the host storage account (imported only when a run is queued)."""
    from azure.storage.queue import QueueServiceClient

    conn = _connection_string(settings)
    if conn:
        return QueueServiceClient.from_connection_string(conn, **CLIENT_OPTIONS)
    uri = settings.storage_queue_uri or f"https://{settings.storage_account_name}.queue.core.windows.net"
    return QueueServiceClient(account_url=uri, credential=credential_factory(), **CLIENT_OPTIONS)


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

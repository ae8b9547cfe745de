"""Doctor checks against the host storage account: the delivery ledger's table and the retry
queues are reachable and writable (a probe entity and a probe message, each deleted at once)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from relay_tools.cli_errors import first_line
from relay_tools.doctor_checks import DEPLOY_GUIDE, CheckResult, DoctorContext, Status, failed, passed, skipped
from relay_tools.doctor_checks.azure import IDENTITY_REMEDY, NO_SETTINGS

PROBE_PARTITION = "doctor-probe"
# A probe message is invisible until it expires: the retry worker can never receive one, even if
# deleting it fails (Storage requires the visibility timeout to be shorter than the lifetime).
PROBE_VISIBILITY_SECONDS = 60
PROBE_TTL_SECONDS = 61
UNREACHABLE_REMEDY = (
    "check AzureWebJobsStorage (or AzureWebJobsStorage__accountName / __tableServiceUri and __queueServiceUri) "
    "and that the account is reachable from here (firewall, DNS)"
)


def _not_configured(ctx: DoctorContext, what: str) -> list[CheckResult] | None:
    if ctx.settings is None:
        return [skipped("storage", what, NO_SETTINGS)]
    if not ctx.settings.uses_storage:
        reason = "no AzureWebJobsStorage: the relay keeps an in-memory ledger and no retry queue (local development)"
        return [skipped("storage", what, reason)]
    return None


def check_ledger_table(ctx: DoctorContext) -> list[CheckResult]:
    """Insert and delete a probe entity in the ledger table (created if missing, as the relay does)."""
    from azure.core.exceptions import ResourceExistsError

    from relay.composition import azure_credential
    from relay.storage_clients import table_service

    what = "the delivery ledger table is reachable and writable"
    if (skip := _not_configured(ctx, what)) is not None:
        return skip
    assert ctx.settings is not None
    settings = ctx.settings
    what = f"the delivery ledger table {settings.idempotency_table!r} is reachable and writable"

    def probe() -> None:
        service = table_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
        table = service.get_table_client(settings.idempotency_table)
        with contextlib.suppress(ResourceExistsError):
            table.create_table()
        entity = {"PartitionKey": PROBE_PARTITION, "RowKey": uuid.uuid4().hex, "state": "doctor"}
        table.upsert_entity(entity)
        table.delete_entity(PROBE_PARTITION, entity["RowKey"])

    return [_run(what, probe, role="Storage Table Data Contributor")]


def check_retry_queues(ctx: DoctorContext) -> list[CheckResult]:
    """Send and delete a probe message on the retry queue and on its poison queue."""
    from relay.names import RETRY_QUEUE_NAME

    what = "the retry queues are reachable and writable"
    if (skip := _not_configured(ctx, what)) is not None:
        return skip
    assert ctx.settings is not None
    settings = ctx.settings
    retry = _run(
        f"the queue {RETRY_QUEUE_NAME!r} is reachable and writable",
        _queue_probe(settings, RETRY_QUEUE_NAME),
        role="Storage Queue Data Contributor",
    )
    poison_name = f"{RETRY_QUEUE_NAME}-poison"
    what = f"the queue {poison_name!r} is reachable and writable"
    if retry.status is Status.FAILED and retry.detail.startswith("unreachable"):
        # Same account and endpoint: no second wait for the SDK's retries.
        return [retry, skipped("storage", what, f"its account is unreachable (see {RETRY_QUEUE_NAME!r} above)")]
    return [retry, _run(what, _queue_probe(settings, poison_name), role="Storage Queue Data Contributor")]


def _queue_probe(settings: Any, name: str) -> Callable[[], None]:
    def probe() -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64EncodePolicy

        from relay.composition import azure_credential
        from relay.storage_clients import queue_service

        service = queue_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
        queue = service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        message = queue.send_message(
            '{"doctor": "probe"}', visibility_timeout=PROBE_VISIBILITY_SECONDS, time_to_live=PROBE_TTL_SECONDS
        )
        queue.delete_message(message.id, message.pop_receipt)

    return probe


def _run(what: str, probe: Callable[[], None], *, role: str) -> CheckResult:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    try:
        probe()
    except ServiceRequestError as exc:
        return failed(
            "storage",
            what,
            f"unreachable ({type(exc).__name__}: {first_line(str(exc), limit=160)})",
            UNREACHABLE_REMEDY,
        )
    except ClientAuthenticationError as exc:
        if getattr(exc, "status_code", None) == 403:
            return failed("storage", what, f"refused (HTTP 403, {_code(exc)})", _role_remedy(role))
        return failed("storage", what, f"could not authenticate: {first_line(str(exc))}", IDENTITY_REMEDY)
    except HttpResponseError as exc:
        if exc.status_code == 403:
            return failed("storage", what, f"refused (HTTP 403, {_code(exc)})", _role_remedy(role))
        return failed("storage", what, f"HTTP {exc.status_code}: {_code(exc)}", "see the storage error code")
    return passed("storage", what)


def _code(exc: Any) -> str:
    return str(getattr(exc, "error_code", None) or "no error code")


def _role_remedy(role: str) -> str:
    return (
        f"grant {role!r} on the storage account to the identity that wrote (the app's identity in Azure, where "
        f"the template grants it; your account locally; {DEPLOY_GUIDE}, step 2)"
    )

"""Azure Functions adapter: moves bytes between ``azure.functions`` types and the relay."""

from __future__ import annotations

import azure.functions as func

from relay.answers import RelayResponse
from relay.composition import built_relay, current_relay, current_verifier
from relay.service import RelayService, answer_request
from webhook.errors import ConfigurationError


def _to_http(response: RelayResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=response.body_bytes(),
        status_code=response.status,
        headers={k: v for k, v in response.headers.items() if k.lower() != "content-type"},
        mimetype="application/json",
        charset="utf-8",
    )


def _service() -> RelayService:
    return current_relay().service


def _built_service() -> RelayService | None:
    relay = built_relay()
    return relay.service if relay is not None else None


def handle_http(req: func.HttpRequest) -> func.HttpResponse:
    """The webhook HTTP function's body; never raises."""
    return _to_http(
        answer_request(
            method=req.method,
            headers=dict(req.headers),
            body=req.get_body(),
            verifier=current_verifier,
            service=_service,
            built_service=_built_service,
        )
    )


def handle_retry_message(msg: func.QueueMessage) -> None:
    """The retry queue function's body.

    Raises:
        ConfigurationError: storage is not configured, so there is nowhere to record outcomes.
        DependencyUnavailable: nothing durable could be written; the host redelivers it.
    """
    worker = current_relay().worker
    if worker is None:
        raise ConfigurationError("retry message received but AzureWebJobsStorage is not configured")
    # An undecodable body still reaches the worker, which parks it as unreadable with an ERROR line.
    worker.process(msg.get_body().decode("utf-8", "replace"), dequeue_count=msg.dequeue_count or 1)

"""Azure Functions adapter: moves bytes between ``azure.functions`` types and the relay."""

from __future__ import annotations

import logging

import azure.functions as func

from relay.app import current_relay
from relay.responses import RelayResponse, error_response, internal_error_response
from webhook.errors import ConfigurationError, RelayError

log = logging.getLogger("relay")


def _to_http(response: RelayResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=response.body_bytes(),
        status_code=response.status,
        headers={k: v for k, v in response.headers.items() if k.lower() != "content-type"},
        mimetype="application/json",
        charset="utf-8",
    )


def handle_http(req: func.HttpRequest) -> func.HttpResponse:
    """The webhook HTTP function's body; never raises."""
    try:
        service = current_relay().service
    except RelayError as exc:  # a missing setting: 500 naming it, never a traceback
        log.error("relay decision=misconfigured detail=%r", exc.detail)
        return _to_http(error_response(exc))
    except Exception:
        log.exception("relay decision=crashed while starting")
        return _to_http(internal_error_response())
    return _to_http(service.handle(method=req.method, headers=dict(req.headers), body=req.get_body()))


def handle_retry_message(msg: func.QueueMessage) -> None:
    """The retry queue function's body.

    Raises:
        ConfigurationError: storage is not configured, so there is nowhere to record outcomes;
            raising lets the host retry the message and finally move it to the poison queue.
    """
    worker = current_relay().worker
    if worker is None:
        raise ConfigurationError("retry message received but AzureWebJobsStorage is not configured")
    worker.process(msg.get_body().decode("utf-8"))

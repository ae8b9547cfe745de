"""The one place where outcomes and errors become HTTP answers (JSON with a ``detail``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from webhook.errors import DependencyUnavailable, MethodNotAllowed, RelayError


@dataclass(frozen=True)
class RelayResponse:
    """An HTTP answer independent of the hosting framework."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


def json_response(status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> RelayResponse:
    return RelayResponse(status, body, {"Content-Type": "application/json", **(headers or {})})


def error_response(exc: RelayError) -> RelayResponse:
    """Map any ``RelayError`` to its status, a reason, and the headers its status needs."""
    headers: dict[str, str] = {}
    if isinstance(exc, DependencyUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = "POST"
    body = {"status": "error", "error": type(exc).__name__, "detail": exc.detail}
    return json_response(int(exc.status), body, headers=headers)


def internal_error_response() -> RelayResponse:
    """A bug: say so without a traceback (the log has it)."""
    body = {"status": "error", "error": "InternalError", "detail": "internal error; see the relay's logs"}
    return json_response(500, body)

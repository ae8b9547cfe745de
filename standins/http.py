"""The HTTP handler base every loopback stand-in answers with: keep-alive, quiet, JSON helpers."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately: no delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, document: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(document).encode(), "application/json; charset=utf-8", extra)


class QuietServer(ThreadingHTTPServer):
    """A threading server that does not print a traceback when a caller hung up first.

    Stand-ins answer late or drop connections on purpose; the caller giving up is expected.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

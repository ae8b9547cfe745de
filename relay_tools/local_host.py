"""A small local host for the registered functions of ``function_app.app``.

Azure Functions Core Tools cannot be installed everywhere; this serves the *same* registered
HTTP functions on Core Tools' address (``127.0.0.1:7071``, ``/api/`` prefix) for local
development, the demo and end-to-end tests. It is not a production server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

ROUTE_PREFIX = "/api/"


@cache
def registered_functions(app: func.FunctionApp) -> tuple[Any, ...]:
    """``app.get_functions()``, once per process: a second call raises in azure-functions."""
    return tuple(app.get_functions())


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: frozenset[str]
    handler: Callable[[func.HttpRequest], func.HttpResponse]


def http_functions(app: func.FunctionApp) -> dict[str, HttpFunction]:
    """The app's HTTP-triggered functions by lower-cased route."""
    found = {}
    for function in registered_functions(app):
        trigger = function.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        binding = trigger.get_dict_repr()
        route = binding.get("route") or function.get_function_name()
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in binding.get("methods") or [])
        found[route.lower()] = HttpFunction(function.get_function_name(), route, methods, function.get_user_function())
    return found


class LocalFunctionsHost(ThreadingHTTPServer):
    """A threaded HTTP server dispatching ``/api/<route>`` to the registered functions."""

    daemon_threads = True
    request_queue_size = 1024  # bursts of concurrent deliveries must queue, not be refused

    def __init__(self, app: func.FunctionApp, host: str = "127.0.0.1", port: int = 7071) -> None:
        self.functions = http_functions(app)
        super().__init__((host, port), _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="local-functions-host", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: LocalFunctionsHost
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends: with Nagle on, the body waits for the client's
    # delayed ACK and every keep-alive answer takes ~40 ms more (measured by bench/).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the relay logs its own decisions; no request lines with query strings

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        function = None
        if parts.path.lower().startswith(ROUTE_PREFIX):
            function = self.server.functions.get(parts.path[len(ROUTE_PREFIX) :].strip("/").lower())
        if function is None:
            self._send(404, {"Content-Type": "application/json"}, json.dumps({"detail": "no such function"}).encode())
            return
        if function.methods and self.command.upper() not in function.methods:
            self._send(405, {"Allow": ", ".join(sorted(function.methods))}, b"")
            return
        request = func.HttpRequest(
            method=self.command.upper(),
            url=f"http://{self.headers.get('Host', 'localhost')}{self.path}",
            headers=dict(self.headers.items()),
            params=dict(parse_qsl(parts.query)),
            route_params={},
            body=body,
        )
        response = function.handler(request)
        headers = dict(response.headers.items())
        headers.setdefault("Content-Type", response.mimetype or "application/octet-stream")
        self._send(response.status_code, headers, response.get_body() or b"")

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

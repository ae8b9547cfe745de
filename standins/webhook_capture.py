"""A loopback webhook receiver that keeps every request exactly as it arrived: headers and body bytes.

It answers every POST with 200 (so the sender never retries) and keeps, in arrival order, the
header lines as sent (names in the sender's spelling, repeats kept) and the raw body bytes, which
it never decodes. Waiting for deliveries is always bounded.

    with WebhookCapture() as capture:
        ...configure the sender with capture.url...
        (delivery,) = capture.wait_for_new(0, timeout=20)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MAX_BODY_BYTES = 1024 * 1024  # a webhook body is a few hundred bytes; refuse anything absurd


@dataclass(frozen=True)
class CapturedRequest:
    """One request as received: path with query, header lines in order, exact body bytes."""

    path: str
    header_lines: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float  # time.time() when the body had been read

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        return next((v for k, v in self.header_lines if k.lower() == name.lower()), None)


class _CaptureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CaptureServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the capture is the record; stderr noise would hide the recorder's one-line result

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._answer(411 if length is None else 413)
            return
        body = self.rfile.read(int(length))
        request = CapturedRequest(self.path, tuple(self.headers.items()), body, time.time())
        self.server.capture.add(request)
        self._answer(200)

    def _answer(self, status: int) -> None:
        payload = b'{"received": true}' if status == 200 else b'{"received": false}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, capture: WebhookCapture) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.capture = capture


class WebhookCapture:
    """The receiver; ``url`` is its base URL once started (``start`` or ``with``)."""

    def __init__(self) -> None:
        self._requests: list[CapturedRequest] = []
        self._arrived = threading.Condition()
        self._server: _CaptureServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the capture server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WebhookCapture:
        self._server = _CaptureServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-capture", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookCapture:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def add(self, request: CapturedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    def requests(self) -> list[CapturedRequest]:
        """Every request so far, in arrival order."""
        with self._arrived:
            return list(self._requests)

    def wait_for_new(self, seen: int, *, timeout: float) -> list[CapturedRequest]:
        """The requests after the first ``seen``, once there is at least one; [] after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) <= seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._arrived.wait(remaining)
            return list(self._requests[seen:])

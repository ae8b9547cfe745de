"""An HTTP proxy on loopback in front of Azurite's table and queue services that injects faults.

The relay's storage connection string points at the proxy (``connection_string``); every
request reaches Azurite unchanged unless a fault applies. Faults are what a storage account
does to a caller, at the HTTP level, so the real SDKs (and their retry policies) meet them:

* ``WriteFault``: the n-th *logical* request matching a predicate (e.g. the table MERGE that
  records ``queued``), or each with a probability, is answered 500/503 with Azure's error body,
  reset before it reaches Azurite, applied and then answered with an error or a reset (the
  caller cannot tell whether it happened), or held for a while and then applied (a slow
  answer). An SDK retry of a request repeats its method, path, If-Match and body within the
  retry window, so it meets the same fault: "the write fails" means all its attempts fail;
  after an applied write whose answer was lost, the retry reaches storage (and gets 409/412,
  or, for a queue message, sends it twice).
* ``Outage``: a time window in which the services refuse connections (reset) or answer 503
  ``ServerBusy``.

Every injected fault is counted by kind (``injected``) for the figures.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from relay.storage_clients import azurite_connection_string
from standins.azurite import Azurite
from standins.functions_queue import HOST_USER_AGENT
from standins.http import QuietServer, StandInHandler

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
ACTIONS = frozenset({"error", "reset", "applied_then_error", "applied_then_reset", "slow"})


@dataclass(frozen=True)
class StorageRequest:
    """One request as the proxy sees it (header names lower-cased)."""

    service: str  # "table" | "queue"
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def from_host(self) -> bool:
        """Sent by the Functions host stand-in (its listener), not by the relay."""
        return HOST_USER_AGENT in self.headers.get("user-agent", "")

    @property
    def entity(self) -> dict[str, Any] | None:
        """The table entity a write carries, if any."""
        if self.service != "table" or not self.body:
            return None
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    @property
    def fingerprint(self) -> str:
        parts = [self.service, self.method, self.path, self.query, self.headers.get("if-match", "")]
        return hashlib.sha256("\n".join(parts).encode() + b"\n" + self.body).hexdigest()


Predicate = Callable[[StorageRequest], bool]


def table_write(state: str | None = None, *, method: str | None = None) -> Predicate:
    """A relay write to a ledger table (insert POST, replace PUT, merge PATCH), optionally of ``state``."""

    def match(request: StorageRequest) -> bool:
        if request.service != "table" or request.method not in ("POST", "PUT", "PATCH", "MERGE"):
            return False
        if request.path.rstrip("/").endswith("/Tables") or (method and request.method != method):
            return False
        entity = request.entity or {}
        return state is None or entity.get("state") == state

    return match


def queue_send(queue: str) -> Predicate:
    """A relay message sent to ``queue`` (not the host's own poison copies)."""
    return lambda r: (
        r.service == "queue" and r.method == "POST" and r.path.endswith(f"/{queue}/messages") and not r.from_host
    )


@dataclass
class WriteFault:
    """Answer logical requests matching ``match`` with ``action`` (see ``ACTIONS``).

    Fires on the ``nth`` matching request and the ``count - 1`` after it, or, when
    ``probability`` is set, on each with that probability (seeded).
    """

    kind: str
    match: Predicate
    action: str = "error"
    nth: int = 1
    count: int = 1
    probability: float | None = None
    status: int = 500
    delay: float = 0.0
    hold: threading.Event | None = None  # "slow": held until set (at most ``delay`` s), then applied
    seed: int = 0
    seen: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        self._rng = random.Random(self.seed)

    def fires(self) -> bool:
        self.seen += 1
        if self.probability is not None:
            return self._rng.random() < self.probability
        return self.nth <= self.seen < self.nth + self.count


@dataclass(frozen=True)
class Outage:
    """From ``start`` to ``end`` (``time.monotonic``) the services refuse (reset) or answer 503."""

    start: float
    end: float
    kind: str = "reset"  # "reset" | "busy"
    services: frozenset[str] = frozenset({"table", "queue"})
    include_host: bool = False

    def covers(self, request: StorageRequest, now: float) -> bool:
        return (
            self.start <= now < self.end
            and request.service in self.services
            and (self.include_host or not request.from_host)
        )


@dataclass
class _Decision:
    fault: WriteFault | None
    seen_at: float


@dataclass
class StorageFaultProxy:
    """Start with ``start()``; hand ``connection_string`` to the relay."""

    azurite: Azurite
    retry_window: float = 5.0  # a repeat of the same request this soon is an SDK retry
    faults: list[WriteFault] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    late: list[tuple[str, int]] = field(default_factory=list)  # held writes: (fault kind, Azurite's status)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: dict[str, _Decision] = {}
        self._servers: dict[str, ThreadingHTTPServer] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> StorageFaultProxy:
        for service in ("table", "queue"):
            self._servers[service] = self._serve(service, self.azurite.ports[service])
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def port(self, service: str) -> int:
        return int(self._servers[service].server_address[1])

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(
            blob_port=self.azurite.ports["blob"], queue_port=self.port("queue"), table_port=self.port("table")
        )

    # -- faults ------------------------------------------------------------------------------------
    def add(self, fault: WriteFault) -> WriteFault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def outage(
        self,
        seconds: float,
        *,
        after: float = 0.0,
        kind: str = "reset",
        services: frozenset[str] = frozenset({"table", "queue"}),
        include_host: bool = False,
    ) -> Outage:
        """A window starting ``after`` seconds from now."""
        start = time.monotonic() + after
        window = Outage(start, start + seconds, kind, services, include_host)
        with self._lock:
            self.outages.append(window)
        return window

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.outages.clear()

    def decide(self, request: StorageRequest) -> tuple[str, WriteFault | None, Outage | None]:
        """What to do with ``request``: ("pass" | an action, the fault, the outage)."""
        now = time.monotonic()
        with self._lock:
            self.requests[request.service] += 1
            for window in self.outages:
                if window.covers(request, now):
                    self.injected[f"storage outage ({window.kind})"] += 1
                    return ("reset" if window.kind == "reset" else "busy"), None, window
            fingerprint = request.fingerprint
            earlier = self._decisions.get(fingerprint)
            if earlier is not None and now - earlier.seen_at <= self.retry_window:
                earlier.seen_at = now
                chosen = earlier.fault
                if chosen is not None and chosen.action.startswith("applied_then"):
                    chosen = None  # the answer was lost once; the SDK's retry reaches storage
            else:
                chosen = next((f for f in self.faults if f.match(request) and f.fires()), None)
                self._decisions[fingerprint] = _Decision(chosen, now)
                if chosen is not None:
                    self.injected[chosen.kind] += 1
            return (chosen.action if chosen else "pass"), chosen, None

    def _serve(self, service: str, upstream: int) -> ThreadingHTTPServer:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy
            service_name = service
            upstream_port = upstream

        server = QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.request_queue_size = 256
        threading.Thread(target=server.serve_forever, name=f"storage-proxy-{service}", daemon=True).start()
        return server


class _ProxyHandler(StandInHandler):
    owner: StorageFaultProxy
    service_name: str
    upstream_port: int
    _local = threading.local()

    def _upstream(self) -> http.client.HTTPConnection:
        connections: dict[int, http.client.HTTPConnection] = getattr(self._local, "connections", {})
        self._local.connections = connections
        if self.upstream_port not in connections:
            connections[self.upstream_port] = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        return connections[self.upstream_port]

    def _forward(self, request: StorageRequest) -> tuple[int, str, list[tuple[str, str]], bytes]:
        target = request.path + (f"?{request.query}" if request.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in (1, 2):  # a kept-alive upstream connection Azurite closed: reconnect once
            connection = self._upstream()
            try:
                connection.request(request.method, target, body=request.body or None, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                connection.close()
                self._local.connections.pop(self.upstream_port, None)
                if attempt == 2:
                    raise
                continue
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
            return answer.status, answer.reason, kept, body
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _error(self, status: int) -> None:
        code, text = ("ServerBusy", "The server is busy.") if status == 503 else ("InternalError", "injected fault")
        if self.service_name == "table":
            body = json.dumps({"odata.error": {"code": code, "message": {"lang": "en-US", "value": text}}}).encode()
            content_type = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
        else:
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{text}</Message></Error>'
            ).encode()
            content_type = "application/xml"
        self._reply(status, body, content_type, {"x-ms-error-code": code})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        request = StorageRequest(
            self.service_name, self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, body
        )
        action, fault, _ = self.owner.decide(request)
        if action == "reset":
            self._reset()
            return
        if action == "busy":
            self._error(503)
            return
        if action == "error":
            self._error(fault.status if fault else 500)
            return
        if action == "slow" and fault is not None:
            # Held, then applied: the caller may have given up (and retried) meanwhile.
            if fault.hold is not None:
                fault.hold.wait(fault.delay)
            else:
                time.sleep(fault.delay)
        status, reason, headers, answer = self._forward(request)
        if action == "slow" and fault is not None:
            with self.owner._lock:
                self.owner.late.append((fault.kind, status))
        if action == "applied_then_reset":
            self._reset()
            return
        if action == "applied_then_error":
            self._error(fault.status if fault else 500)
            return
        try:
            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)
        except OSError:
            self.close_connection = True  # the caller gave up (a slow answer): nothing to tell it

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = do_HEAD = _handle

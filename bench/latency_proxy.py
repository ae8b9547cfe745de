"""A loopback TCP proxy that adds one network delay per client flight, and logs the flights.

Put in front of every dependency of the cold first answer (the managed-identity endpoint, Key
Vault, Azurite's table and queue services, Azure DevOps), it turns loopback into a network where
each round trip costs ``delay``: a new connection waits ``delay`` before its first byte goes
upstream (the TCP handshake), and every burst of bytes the client sends waits ``delay`` before
it is forwarded (a TLS handshake flight, a request). Answers come back at once, so one request
and its answer cost one ``delay``, as with a one-way latency of ``delay / 2``. Bytes that arrive
while earlier ones still wait are forwarded with them, in order: a burst is one flight.

The log gives, per service, the connections and flights and when each started, so the first
answer's sequence of round trips can be read off; the benchmark compares the first answer's
time at two delays to count how many of them it waited on in sequence.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flight:
    service: str
    connection: int
    kind: str  # "connect" or "send"
    at: float  # time.monotonic() when it reached the proxy
    size: int


@dataclass
class LatencyProxy:
    """``add(name, port)`` returns the proxy port for an upstream on 127.0.0.1; start, then stop."""

    delay: float
    flights: list[Flight] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []
        self._connections = 0
        self._lock = threading.Lock()

    def add(self, service: str, upstream_port: int) -> int:
        future = asyncio.run_coroutine_threadsafe(self._listen(service, upstream_port), self._loop)
        return future.result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def clear(self) -> None:
        with self._lock:
            self.flights.clear()

    def _record(self, flight: Flight) -> None:
        with self._lock:
            self.flights.append(flight)

    async def _listen(self, service: str, upstream_port: int) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with self._lock:
                self._connections += 1
                connection = self._connections
            self._record(Flight(service, connection, "connect", time.monotonic(), 0))
            await asyncio.sleep(self.delay)
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(
                self._forward_delayed(reader, up_writer, service, connection),
                self._forward(up_reader, writer),
                return_exceptions=True,
            )

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _forward_delayed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: str, connection: int
    ) -> None:
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        window_ends = 0.0

        async def deliver() -> None:
            while True:
                due, chunk = await pending.get()
                if not chunk:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(65536):
                now = time.monotonic()
                if now >= window_ends:  # nothing of this connection is in flight: a new flight
                    self._record(Flight(service, connection, "send", now, len(chunk)))
                    window_ends = now + self.delay
                await pending.put((window_ends, chunk))
        finally:
            await pending.put((0.0, b""))
            await sender

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

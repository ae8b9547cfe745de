"""Start and stop the Azurite storage emulator (tables and queues) on loopback, for tests.

The pinned Azurite comes from ``package.json`` (``npm ci`` installs it under ``node_modules``).
It listens on ports the OS picks (``--*Port 0``); the ports are read from its start-up lines,
so two sessions never race for the same port. Storage lives in memory only.

    with running_azurite() as azurite:
        TableServiceClient.from_connection_string(azurite.connection_string)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from relay.storage_clients import azurite_connection_string

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
_LISTENING = re.compile(
    r"Azurite (?P<service>Blob|Queue|Table) service is successfully listening at http://[^:]+:(?P<port>\d+)"
)
START_TIMEOUT_SECONDS = 60.0


class AzuriteMissing(RuntimeError):
    """The Azurite binary is not installed."""


@dataclass
class Azurite:
    """A running Azurite process and the ports its services listen on."""

    process: subprocess.Popen[str]
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        """The storage connection string for this instance (``AzureWebJobsStorage``)."""
        ports = self.ports
        return azurite_connection_string(blob_port=ports["blob"], queue_port=ports["queue"], table_port=ports["table"])

    def stop(self) -> None:
        """Terminate the process group (npm's shim and node), then reap it."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=10)


def _signal_group(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # start_new_session=True: the group id is the pid


def azurite_command(binary: Path = AZURITE_BIN) -> list[str]:
    """The command line: loopback only, OS-chosen ports, in memory, no telemetry, quiet."""
    return [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        "0",
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        "0",
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        "0",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
    ]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_azurite(binary: Path = AZURITE_BIN, *, timeout: float = START_TIMEOUT_SECONDS) -> Azurite:
    """Start Azurite and return once its blob, queue and table ports accept connections.

    Raises:
        AzuriteMissing: the binary is not installed (run ``npm ci`` in the repository root).
        RuntimeError: it exited or did not listen within ``timeout`` seconds (with its output).
    """
    if not binary.exists():
        raise AzuriteMissing(
            f"Azurite is not installed ({binary} is missing): run `npm ci` in {REPO_ROOT} "
            "(Node.js 20+; package.json pins azurite) and run the tests again"
        )
    # --inMemoryPersistence refuses --location; the working directory gets its debug files, if any.
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    process = subprocess.Popen(
        azurite_command(binary),
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    azurite = Azurite(process, workdir)
    ready = threading.Event()

    def read_output() -> None:  # keeps draining after start-up so the pipe never fills
        assert process.stdout is not None
        for line in process.stdout:
            azurite.output.append(line.rstrip())
            match = _LISTENING.search(line)
            if match:
                azurite.ports[match["service"].lower()] = int(match["port"])
                if len(azurite.ports) == 3:
                    ready.set()
        ready.set()

    threading.Thread(target=read_output, name="azurite-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    ready.wait(timeout)
    while len(azurite.ports) == 3 and not all(_accepts(p) for p in azurite.ports.values()):
        if time.monotonic() > deadline or process.poll() is not None:
            break
        time.sleep(0.05)
    if len(azurite.ports) != 3 or not all(_accepts(p) for p in azurite.ports.values()):
        azurite.stop()
        tail = "\n".join(azurite.output[-20:])
        raise RuntimeError(f"Azurite did not start within {timeout:.0f} s (exit code {process.poll()}):\n{tail}")
    return azurite


@contextmanager
def running_azurite(binary: Path = AZURITE_BIN) -> Iterator[Azurite]:
    """Azurite for the duration of the ``with`` block."""
    azurite = start_azurite(binary)
    try:
        yield azurite
    finally:
        azurite.stop()


_shared_lock = threading.Lock()
_shared: Azurite | None = None
_shared_users = 0


def acquire_shared() -> Azurite:
    """One Azurite per test process, however many suites ask for it; pair with ``release_shared``."""
    global _shared, _shared_users
    with _shared_lock:
        if _shared is None:
            _shared = start_azurite()
        _shared_users += 1
        return _shared


def release_shared() -> None:
    """Stop the shared Azurite when its last user is done."""
    global _shared, _shared_users
    with _shared_lock:
        _shared_users -= 1
        if _shared_users <= 0 and _shared is not None:
            _shared.stop()
            _shared = None

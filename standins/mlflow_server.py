"""Start and stop a real ``mlflow server`` (the installed MLflow) on loopback, for tests and tools.

The server keeps a sqlite registry and its artifacts in a work directory, may deliver webhooks to
plain-http loopback targets, and stores webhook secrets encrypted with a Fernet key generated for
this server alone (MLflow refuses to store a secret without ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``).
It runs in its own process group: uvicorn serves from a child process, and stopping the group
stops both.

    server = start_mlflow_server(workdir)
    try:
        MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    finally:
        stop_mlflow_server(server)

MLflow caches the list of webhooks per event for ``MLFLOW_WEBHOOK_CACHE_TTL`` (60 s): a webhook
created after an event of the same type has fired on that server is not called for up to a
minute. Create webhooks before the first event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MLFLOW_STARTUP_TIMEOUT_SECONDS = 90.0  # a cold start (sqlite migrations, imports) takes 10-40 s
_HEALTH_POLL_SECONDS = 0.25


class MlflowServerFailed(RuntimeError):
    """``mlflow server`` exited, or never answered ``/health`` in time; the message says which."""


def free_loopback_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``; ``url`` is the tracking URI for ``MlflowClient``."""

    url: str
    workdir: Path
    log_file: Path
    process: subprocess.Popen[bytes]
    command: tuple[str, ...]

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's combined output."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def mlflow_server_env(workdir: Path) -> dict[str, str]:
    """The server's environment: this process's, minus every ``MLFLOW_*`` setting, plus ours."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",  # loopback receivers listen on plain http
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",  # 127.0.0.1 is not a public address
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode("ascii"),
        MLFLOW_DISABLE_TELEMETRY="true",
        HOME=str(workdir),  # keep ~/.mlflow and friends inside the work directory
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_mlflow_server(workdir: Path, *, timeout: float = MLFLOW_STARTUP_TIMEOUT_SECONDS) -> MlflowServer:
    """Start ``mlflow server`` in its own process group and wait until ``/health`` answers.

    Raises:
        MlflowServerFailed: the server exited, or did not answer within ``timeout`` seconds (it is
            stopped first); the message carries the tail of its log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    command = (
        *(sys.executable, "-m", "mlflow", "server"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}"),
        *("--default-artifact-root", str(workdir / "artifacts")),
    )
    log_file = workdir / "mlflow-server.log"
    with log_file.open("wb") as log:
        # The command is ours (this interpreter, fixed arguments): no shell, nothing from outside.
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=mlflow_server_env(workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", workdir, log_file, process, command)
    try:
        _wait_until_healthy(server, timeout)
    except BaseException:
        stop_mlflow_server(server)
        raise
    return server


def _wait_until_healthy(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(server.url):
        if server.process.poll() is not None:
            raise MlflowServerFailed(f"mlflow server exited with {server.process.returncode}:\n{server.log_tail()}")
        if time.monotonic() >= deadline:
            raise MlflowServerFailed(
                f"mlflow server on {server.url} never answered /health within {timeout:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(_HEALTH_POLL_SECONDS)


def stop_mlflow_server(server: MlflowServer) -> None:
    """Stop the whole process group (uvicorn runs its worker as a child process)."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)  # stragglers of the group, if any
    server.process.wait(timeout=5)

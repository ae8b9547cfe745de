"""Shared pieces of the benchmark: signed deliveries, rules files, relay environment, statistics."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.settings import SETTING_NAMES
from standins import devops as devops_standin
from webhook.signatures import mlflow_signed_headers

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef"
DEVOPS_PAT = "bench-devops-pat"
PROJECT = "bench"
MODEL = "bench-model"
ALIAS = "champion"

# Every setting the relay reads that could leak in from the caller's shell and change the path.
RELAY_SETTINGS = SETTING_NAMES | {
    # ... and what azure-identity and the TLS stacks read on their own.
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
}


@dataclass(frozen=True)
class SignedDelivery:
    """One MLflow ``model_version_alias.created`` delivery, as MLflow would sign it."""

    delivery_id: str
    headers: dict[str, str]
    body: bytes


def mlflow_delivery(*, secret: str = WEBHOOK_SECRET, version: int = 1) -> SignedDelivery:
    """A distinct delivery (new delivery id, current timestamp), so the ledger never answers "duplicate"."""
    delivery_id = str(uuid.uuid4())
    timestamp = int(time.time())
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(timestamp)),
            "data": {"name": MODEL, "alias": ALIAS, "version": str(version)},
        }
    ).encode()
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)
    return SignedDelivery(delivery_id, headers, body)


def write_rules(path: Path, count: int, *, first_pipeline: int = 21) -> Path:
    """A rules file with ``count`` rules that all match the bench delivery (fan-out)."""
    lines = ["rules:"]
    for i in range(count):
        lines += [
            f"  - name: bench-{i + 1}",
            f"    pipeline_id: {first_pipeline + i}",
            "    when:",
            "      event: model_version_alias.created",
            f"      alias: {ALIAS}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_environ(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """``base`` without any relay setting, then ``settings`` on top."""
    env = {k: v for k, v in base.items() if k not in RELAY_SETTINGS}
    env.update(settings)
    return env


def apply_environ(settings: Mapping[str, str]) -> None:
    """Make this process's environment exactly ``settings`` for the relay, and rebuild the relay."""
    from relay.composition import reset_relay

    for name in RELAY_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(settings)
    reset_relay()


def child_report(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float, what: str
) -> dict[str, Any]:
    """Run a benchmark child process and return the JSON object its last ``{`` line prints.

    Raises:
        RuntimeError: the child exited non-zero or printed no JSON line (with its stderr's tail).
    """
    done = subprocess.run(
        list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    return percentile(list(values), 50)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        kernel = subprocess.run(["uname", "-sr"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        kernel = platform.platform()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": kernel,
        "executable": sys.executable,
    }


def azure_like_ca_bundle(ca_file: Path, workdir: Path) -> Path:
    """A CA bundle as large as the one the relay loads in Azure: certifi's, plus the stand-ins' CA.

    In Azure, requests (the Key Vault and Tables clients) loads certifi's bundle into every new
    TLS connection's context, and httpx once per client: 15-20 ms each on this machine. The
    stand-ins' one-certificate CA file would hide that cost, so the cold children trust this.
    """
    import certifi

    bundle = workdir / "azure-like-ca-bundle.pem"
    workdir.mkdir(parents=True, exist_ok=True)
    bundle.write_text(
        Path(certifi.where()).read_text(encoding="ascii") + "\n" + ca_file.read_text(encoding="ascii"), encoding="ascii"
    )
    return bundle


def start_devops_standin(workdir: Path, **options: object) -> devops_standin.DevOpsStandIn:
    """The loopback Azure DevOps stand-in, started, with Nagle's algorithm off.

    The stand-in writes its status line and headers, then its body, in two sends. With Nagle
    on, the body waits for the client's delayed ACK (~40 ms on Linux), so every POST, the
    relay's or the bare one, takes ~44 ms and hides the relay's own cost. Azure DevOps has no
    such stall, so the bench sets ``StreamRequestHandler.disable_nagle_algorithm`` (a class
    attribute, in this process only; the tests' stand-in file is unchanged).
    """
    devops_standin._Handler.disable_nagle_algorithm = True
    return devops_standin.DevOpsStandIn(workdir, **options).start()  # type: ignore[arg-type]

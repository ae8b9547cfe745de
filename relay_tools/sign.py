"""``mlflow-relay sign``: the signature headers for a payload, or a ready ``curl`` command.

The secret is read the relay's way (Key Vault when ``KEY_VAULT_URL`` is set, else
``WEBHOOK_SECRET``) and never printed; a signature is an HMAC of the body, not the secret.
"""

from __future__ import annotations

import argparse
import shlex
import time
import uuid
from pathlib import Path

from relay_tools.cli_errors import ExitCode

LOCAL_WEBHOOK_URL = "http://127.0.0.1:7071/api/MLflowWebHookTransition"


def add_sign_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sign = subparsers.add_parser(
        "sign", help="print the signature header(s) for a payload, or a ready curl command", description=__doc__
    )
    sign.add_argument("payload", help="the exact body file to sign (samples: examples/payloads/)")
    sign.add_argument("--format", choices=["databricks", "mlflow"], help="default: detected from the body")
    sign.add_argument("--delivery-id", help="MLflow: delivery id (default: a new uuid)")
    sign.add_argument("--timestamp", type=int, help="MLflow: unix seconds (default: now)")
    sign.add_argument("--curl", action="store_true", help="print a curl command that posts the signed payload")
    sign.add_argument("--url", default=LOCAL_WEBHOOK_URL, help=f"--curl: where to post (default: {LOCAL_WEBHOOK_URL})")
    sign.set_defaults(func=cmd_sign)


def signed_headers(body: bytes, *, secret: str, fmt: str, delivery_id: str, timestamp: int) -> dict[str, str]:
    """The headers the sender would send with ``body`` (Content-Type included)."""
    from webhook.signatures import mlflow_signed_headers, sign_databricks

    if fmt == "databricks":
        return {"Content-Type": "application/json", "X-Databricks-Signature": sign_databricks(body, secret=secret)}
    return mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)


def curl_command(url: str, headers: dict[str, str], payload: Path) -> str:
    """A shell command that posts ``payload`` with ``headers`` (every word quoted for sh)."""
    words = ["curl", "-sS", "-i", "-X", "POST", url]
    for name, value in headers.items():
        words += ["-H", f"{name}: {value}"]
    words += ["--data-binary", f"@{payload}"]
    return " ".join(shlex.quote(w) for w in words)


def cmd_sign(args: argparse.Namespace) -> int:
    """Print ``Name: value`` lines (``curl -H @file`` reads them), or the whole curl command."""
    from relay_tools.webhook_secret import read_webhook_secret
    from webhook.delivery import sender_of_body

    path = Path(args.payload)
    body = path.read_bytes()
    fmt = args.format or sender_of_body(body).value
    delivery_id = args.delivery_id or str(uuid.uuid4())
    timestamp = args.timestamp if args.timestamp is not None else int(time.time())
    headers = signed_headers(body, secret=read_webhook_secret(), fmt=fmt, delivery_id=delivery_id, timestamp=timestamp)
    if args.curl:
        print(curl_command(args.url, headers, path))
    else:
        for name, value in headers.items():
            if name != "Content-Type":
                print(f"{name}: {value}")
    return ExitCode.OK

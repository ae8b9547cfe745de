"""``mlflow-relay demo``: the relay end to end on this machine, no Azure account needed.

Serves ``function_app`` in dry-run mode with the shipped ``routes.yaml``, posts signed
deliveries (Databricks stage moves, an MLflow alias move, a forged one) and prints each answer.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass

import httpx

from webhook.signatures import mlflow_signed_headers, sign_databricks


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = subparsers.add_parser(
        "demo", help="run the relay locally in dry-run mode against signed samples", description=__doc__
    )
    demo.add_argument("--port", type=int, default=0, help="port to serve on (default: any free port)")
    demo.set_defaults(func=lambda args: run_demo(port=args.port))


@dataclass(frozen=True)
class DemoCase:
    title: str
    headers: dict[str, str]
    body: bytes
    expected_status: int


def _databricks(
    title: str, secret: str, *, to_stage: str, from_stage: str, version: str, expected: int, forge: bool = False
) -> DemoCase:
    body = json.dumps(
        {
            "event": "MODEL_VERSION_TRANSITIONED_STAGE",
            "webhook_id": "demo-webhook",
            "event_timestamp": int(time.time() * 1000),
            "model_name": "wine-quality",
            "version": version,
            "to_stage": to_stage,
            "from_stage": from_stage,
            "text": "moved by the demo",
        }
    ).encode()
    signature = sign_databricks(body, secret="not-the-secret" if forge else secret)
    return DemoCase(title, {"Content-Type": "application/json", "X-Databricks-Signature": signature}, body, expected)


def _mlflow_alias(title: str, secret: str, *, alias: str, version: str, expected: int) -> DemoCase:
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": "wine-quality", "alias": alias, "version": version},
        }
    ).encode()
    delivery_id, timestamp = str(uuid.uuid4()), int(time.time())
    headers = mlflow_signed_headers(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)
    return DemoCase(title, headers, body, expected)


def demo_cases(secret: str) -> list[DemoCase]:
    return [
        _databricks(
            "Databricks: version 3 moved None -> Staging",
            secret,
            to_stage="Staging",
            from_stage="None",
            version="3",
            expected=200,
        ),
        _databricks(
            "Databricks: version 3 moved Staging -> Production",
            secret,
            to_stage="Production",
            from_stage="Staging",
            version="3",
            expected=200,
        ),
        _databricks(
            "Databricks: version 2 demoted Production -> Archived (no rule: ignored)",
            secret,
            to_stage="Archived",
            from_stage="Production",
            version="2",
            expected=200,
        ),
        _mlflow_alias(
            "MLflow: alias 'champion' now points at version 3", secret, alias="champion", version="3", expected=200
        ),
        _databricks(
            "Forged: signed with the wrong secret (refused)",
            secret,
            to_stage="Production",
            from_stage="Staging",
            version="666",
            expected=401,
            forge=True,
        ),
    ]


def run_demo(*, port: int = 0) -> int:
    """Returns 0 when every answer had the expected status."""
    secret = secrets.token_hex(16)  # a throwaway, never printed
    os.environ.update(
        {
            "WEBHOOK_SECRET": secret,
            "DEVOPS_ORG_URL": "https://dev.azure.com/contoso-demo",
            "DEVOPS_PROJECT": "MLOps",
            "RELAY_DRY_RUN": "true",
        }
    )
    # The demo shows the shipped rules with no Azure at all: drop anything pointing elsewhere.
    for name in ("KEY_VAULT_URL", "ROUTES_FILE", "AzureWebJobsStorage", "AzureWebJobsStorage__accountName"):
        os.environ.pop(name, None)
    from function_app import app
    from relay.composition import reset_relay
    from relay_tools.local_host import LocalFunctionsHost

    reset_relay()
    server = LocalFunctionsHost(app, "127.0.0.1", port)
    server.start_in_thread()
    url = f"{server.base_url}/api/MLflowWebHookTransition"
    print(f"relay (dry run) listening on {url}\n")
    failures = 0
    try:
        with httpx.Client(timeout=10) as client:
            for case in demo_cases(secret):
                answer = client.post(url, content=case.body, headers=case.headers)
                ok = answer.status_code == case.expected_status
                failures += not ok
                print(f"--> {case.title}\n<-- HTTP {answer.status_code}{'' if ok else '  (UNEXPECTED)'}")
                print(json.dumps(answer.json(), indent=2), "\n")
    finally:
        server.shutdown()
        server.server_close()
    print(
        "demo finished: every answer as expected" if not failures else f"demo finished: {failures} unexpected answer(s)"
    )
    return 1 if failures else 0

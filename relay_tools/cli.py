"""``mlflow-relay``: run the relay locally, explain routing, sign payloads, run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from relay.settings import APP_ROOT


def cmd_serve(args: argparse.Namespace) -> int:
    """Host function_app's registered functions on 127.0.0.1:7071 until interrupted."""
    if args.dry_run:
        os.environ["RELAY_DRY_RUN"] = "true"
    from function_app import app
    from relay_tools.local_host import LocalFunctionsHost

    server = LocalFunctionsHost(app, args.host, args.port)
    routes = ", ".join(f"{server.base_url}/api/{f.route}" for f in server.functions.values())
    print(f"mlflow-relay serving {routes}{' (dry run)' if args.dry_run else ''}; Ctrl+C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _load_payload(path: str) -> bytes:
    return Path(path).read_bytes()


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the matching rules and the exact run requests for a payload, sending nothing."""
    from devops.client import API_VERSION, run_request_body, runs_endpoint
    from relay.composition import load_rules_file
    from webhook.delivery import Sender, sender_of_body
    from webhook.events import parse_databricks_event, parse_mlflow_event
    from webhook.routing import route_event

    body = _load_payload(args.payload)
    if sender_of_body(body) is Sender.MLFLOW:
        event = parse_mlflow_event(body, delivery_id=args.delivery_id or "explain-" + uuid.uuid4().hex)
    else:
        event = parse_databricks_event(body)
    rules = load_rules_file(Path(args.rules or os.environ.get("ROUTES_FILE") or APP_ROOT / "routes.yaml"))
    project = args.project or os.environ.get("DEVOPS_PROJECT") or "<DEVOPS_PROJECT>"
    org = os.environ.get("DEVOPS_ORG_URL") or "<DEVOPS_ORG_URL>"
    runs = route_event(rules, event, default_project=project)
    report: dict[str, Any] = {
        "event": event.model_dump(mode="json"),
        "matched_rules": [r.rule for r in runs],
        "runs": [
            {"rule": r.rule, "method": "POST",
             "url": f"{runs_endpoint(org, r)}?api-version={API_VERSION}",
             "body": run_request_body(r)}
            for r in runs
        ],
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Print the signature header(s) for a payload file, using WEBHOOK_SECRET."""
    from relay_tools.webhook_secret import read_webhook_secret
    from webhook.delivery import sender_of_body
    from webhook.signatures import sign_databricks, sign_mlflow

    body = _load_payload(args.payload)
    secret = read_webhook_secret()
    fmt = args.format or sender_of_body(body).value
    if fmt == "databricks":
        print(f"X-Databricks-Signature: {sign_databricks(body, secret=secret)}")
        return 0
    delivery_id = args.delivery_id or str(uuid.uuid4())
    timestamp = args.timestamp if args.timestamp is not None else int(time.time())
    print(f"X-MLflow-Delivery-Id: {delivery_id}")
    print(f"X-MLflow-Timestamp: {timestamp}")
    print(f"X-MLflow-Signature: {sign_mlflow(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the relay in dry-run mode, post signed sample deliveries, print the answers."""
    from relay_tools.demo import run_demo

    return run_demo(port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlflow-relay", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log the relay's decisions to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="host the function app locally (like `func start`)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--dry-run", action="store_true", help="answer with the runs it would start; call nothing")
    serve.set_defaults(func=cmd_serve)

    explain = sub.add_parser("explain", help="show which rules match a payload and the run requests")
    explain.add_argument("payload", help="a JSON body file (Databricks or MLflow format)")
    explain.add_argument("--rules", help="rules file (default: ROUTES_FILE or routes.yaml)")
    explain.add_argument("--project", help="default Azure DevOps project (default: DEVOPS_PROJECT)")
    explain.add_argument("--delivery-id", help="delivery id for an MLflow payload")
    explain.set_defaults(func=cmd_explain)

    sign = sub.add_parser("sign", help="print the signature header(s) for a payload (secret: WEBHOOK_SECRET)")
    sign.add_argument("payload", help="the exact body file to sign")
    sign.add_argument("--format", choices=["databricks", "mlflow"], help="default: detected from the body")
    sign.add_argument("--delivery-id", help="MLflow: delivery id (default: a new uuid)")
    sign.add_argument("--timestamp", type=int, help="MLflow: unix seconds (default: now)")
    sign.set_defaults(func=cmd_sign)

    demo = sub.add_parser("demo", help="run the relay locally in dry-run mode against signed samples")
    demo.add_argument("--port", type=int, default=0, help="port to serve on (default: any free port)")
    demo.set_defaults(func=cmd_demo)

    # The delivery log, the poison queue and catch-up (issue 17).
    from relay_tools.catch_up_command import add_catch_up_parser
    from relay_tools.deliveries import add_deliveries_parser
    from relay_tools.retries import add_retries_parser

    add_deliveries_parser(sub)
    add_retries_parser(sub)
    add_catch_up_parser(sub)

    try:
        from relay_tools.webhooks_admin import add_webhooks_parser
    except ImportError:  # the optional `databricks` extra is not installed
        pass
    else:
        add_webhooks_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    handler = args.func
    if getattr(args, "command", None) == "webhooks":
        from relay_tools.webhook_secret import read_webhook_secret

        return int(handler(args, secret_provider=read_webhook_secret))
    try:
        return int(handler(args))
    except Exception as exc:  # a CLI prints a reason, not a traceback
        from webhook.errors import RelayError

        if isinstance(exc, RelayError | OSError | ValueError):
            print(f"mlflow-relay: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

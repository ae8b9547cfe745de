"""``mlflow-relay serve``: host function_app's registered functions locally, like ``func start``."""

from __future__ import annotations

import argparse
import os

from relay_tools.cli_errors import ExitCode


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser(
        "serve", help="host the function app locally (like `func start`)", description=__doc__
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    serve.add_argument("--port", type=int, default=7071, help="port to listen on (default: 7071, as Core Tools)")
    serve.add_argument("--dry-run", action="store_true", help="answer with the runs it would start; call nothing")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; the settings are read from the environment on the first request."""
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
    return ExitCode.OK

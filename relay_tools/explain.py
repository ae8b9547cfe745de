"""``mlflow-relay explain``: which rules match a payload and the exact run requests, sending nothing.

With ``--preview`` it also asks Azure DevOps for a *preview run* of each request
(``previewRun: true`` on the Runs API, which starts nothing) and shows the pipeline's answer:
the expanded YAML, or its refusal (``Unexpected parameter 'x'``, an unknown pipeline, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path
from typing import Any

from relay_tools.cli_errors import ExitCode
from relay_tools.tool_context import routes_path


def add_explain_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    explain = subparsers.add_parser(
        "explain", help="show which rules match a payload and the run requests", description=__doc__
    )
    explain.add_argument("payload", help="a JSON body file, Databricks or MLflow format (samples: examples/payloads/)")
    explain.add_argument("--rules", help="rules file (default: ROUTES_FILE or routes.yaml)")
    explain.add_argument("--project", help="default Azure DevOps project (default: DEVOPS_PROJECT)")
    explain.add_argument("--delivery-id", help="delivery id for an MLflow payload")
    explain.add_argument(
        "--preview",
        action="store_true",
        help="ask Azure DevOps for a preview run of each request (needs the relay's settings)",
    )
    explain.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the report as JSON; with ``--preview``, exit 1 when a pipeline refuses its request."""
    from devops.client import API_VERSION, run_request_body, runs_endpoint
    from relay.composition import load_rules_file
    from relay.settings import settings_from_env
    from webhook.delivery import Sender, sender_of_body
    from webhook.events import parse_databricks_event, parse_mlflow_event
    from webhook.routing import route_event

    body = Path(args.payload).read_bytes()
    if sender_of_body(body) is Sender.MLFLOW:
        event = parse_mlflow_event(body, delivery_id=args.delivery_id or "explain-" + uuid.uuid4().hex)
    else:
        event = parse_databricks_event(body)
    settings = settings_from_env(os.environ) if args.preview else None
    rules_file = settings.routes_file if settings and not args.rules else routes_path(os.environ, args.rules)
    if settings is not None:
        project, org = args.project or settings.devops_project, settings.devops_org_url
    else:
        project = args.project or os.environ.get("DEVOPS_PROJECT") or "<DEVOPS_PROJECT>"
        org = os.environ.get("DEVOPS_ORG_URL") or "<DEVOPS_ORG_URL>"
    requests = route_event(load_rules_file(rules_file), event, default_project=project)
    runs: list[dict[str, Any]] = []
    for request in requests:
        url = f"{runs_endpoint(org, request)}?api-version={API_VERSION}"
        runs.append({"rule": request.rule, "method": "POST", "url": url, "body": run_request_body(request)})
    code = ExitCode.OK
    if settings is not None and requests:
        code = _preview_each(settings, requests, runs)
    report = {"event": event.model_dump(mode="json"), "matched_rules": [r.rule for r in requests], "runs": runs}
    print(json.dumps(report, indent=2))
    return code


def _preview_each(settings: Any, requests: list[Any], runs: list[dict[str, Any]]) -> ExitCode:
    """Add each pipeline's answer to its run as ``preview``; the worst outcome decides the code."""
    from relay.composition import build_devops_client
    from relay.ports import DependencyUnavailable, PipelineRejected
    from relay_tools.tool_context import tool_secrets

    client = build_devops_client(settings, tool_secrets(settings))
    code = ExitCode.OK
    for request, run in zip(requests, runs, strict=True):
        try:
            answer = client.preview(request)
        except PipelineRejected as exc:
            run["preview"] = {"status": "refused", "detail": exc.detail}
            code = max(code, ExitCode.FAILED)
        except DependencyUnavailable as exc:
            run["preview"] = {"status": "unavailable", "detail": exc.detail}
            code = max(code, ExitCode.UNAVAILABLE)
        else:
            run["preview"] = {"status": "accepted", "final_yaml": answer.get("finalYaml")}
    return code

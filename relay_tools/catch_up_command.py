"""``mlflow-relay catch-up``: the timer function's catch-up, run by hand (``--dry-run`` to look only).

Registries come from ``--tracking-uri`` (open-source MLflow), ``--databricks-host`` (the
workspace registry's stages), ``--unity-catalog HOST[#catalog.schema]``, or ``--registry
kind=url`` (the ``CATCH_UP_REGISTRIES`` syntax); with none, from ``CATCH_UP_REGISTRIES``. The
relay is built from the environment as in Azure and starts runs through its own dispatch.
MLflow is read with ``MLFLOW_TRACKING_TOKEN`` when set; Databricks with your Entra token.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import Any

from relay_tools.operator import operator_relay


def cmd_catch_up(args: argparse.Namespace) -> int:
    import httpx

    from relay.catch_up_runner import registry_auth, run_catch_up
    from relay.composition import azure_credential
    from relay.registries import registry_reader
    from relay.registry_specs import parse_registries, registry_spec

    specs = [registry_spec("mlflow", u) for u in args.tracking_uri or []]
    specs += [registry_spec("databricks", u) for u in args.databricks_host or []]
    specs += [registry_spec("unity-catalog", u) for u in args.unity_catalog or []]
    for entry in args.registry or []:
        specs += parse_registries(entry, setting="--registry")
    relay = operator_relay()
    if not specs:
        specs = list(parse_registries(relay.settings.catch_up_registries))
    if not specs:
        raise ValueError(
            "no registry: give --tracking-uri, --databricks-host, --unity-catalog or --registry, "
            "or set CATCH_UP_REGISTRIES"
        )
    token = os.environ.get("MLFLOW_TRACKING_TOKEN") or None
    with httpx.Client(headers={"User-Agent": "mlflow-relay/catch-up"}) as http:
        auths = [
            registry_auth(s, credential_factory=lambda: azure_credential(None), mlflow_token=lambda: token)
            for s in specs
        ]
        readers = [registry_reader(s, http, auth=auth) for s, auth in zip(specs, auths, strict=True)]
        reports = run_catch_up(relay, readers, dry_run=args.dry_run)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "registry": r.registry,
                        "dry_run": r.dry_run,
                        "error": r.error,
                        "actions": [asdict(a) for a in r.actions],
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    else:
        for report in reports:
            _print_report(report)
    return 1 if any(r.failed for r in reports) else 0


def _print_report(report: Any) -> None:
    verb = "would start" if report.dry_run else "started"
    print(
        f"{report.registry}: {len(report.started)} run(s) {verb}" + (" (dry run)" if report.dry_run else ""),
    )
    if report.error:
        print(f"  FAILED: {report.error}")
    for action in report.actions:
        result = f" -> {action.outcome}" + (f" run {action.run_id}" if action.run_id else "") if action.outcome else ""
        print(
            f"  {action.model} {action.selector} v{action.version} rule {action.rule}: {action.action}{result}"
            f" ({action.reason})" + (f" [{action.delivery_id}]" if action.delivery_id else "")
        )


def add_catch_up_parser(sub: Any) -> None:
    """Register ``catch-up`` on the CLI's subparsers."""
    parser = sub.add_parser("catch-up", help="start, once, the stage/alias moves whose webhook never arrived")
    parser.add_argument("--tracking-uri", action="append", help="open-source MLflow server (aliases); repeatable")
    parser.add_argument("--databricks-host", action="append", help="Databricks workspace registry (stages)")
    parser.add_argument(
        "--unity-catalog",
        action="append",
        metavar="HOST[#CATALOG.SCHEMA]",
        help="Unity Catalog aliases (the schema is listed; without it, the models the rules name)",
    )
    parser.add_argument("--registry", action="append", metavar="KIND=URL", help="as in CATCH_UP_REGISTRIES")
    parser.add_argument("--dry-run", action="store_true", help="show what would be started; write and start nothing")
    parser.add_argument("--json", action="store_true", help="the plan and its outcome as JSON")
    parser.set_defaults(func=cmd_catch_up)

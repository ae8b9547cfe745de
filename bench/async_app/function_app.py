"""The webhook function as an ``async def`` with ``httpx.AsyncClient``: the alternative the
concurrency benchmark (``bench/concurrency.py``) measures against the relay's synchronous one.

Same work per delivery as the relay's success path, minus what does not change the concurrency
model: read the secrets and rules once (environment, ``ROUTES_FILE``), verify, parse and route with
the relay's own core (``webhook/``), then POST every run the rules ask for to Azure DevOps with the
relay's request shape (``devops.client``), concurrently, on one pooled client with the relay's pool
limits and CA trust. No ledger (the relay's in-memory one costs microseconds), no retries (the
stand-in never fails here). Benchmark code: not part of the app, never deployed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from functools import cache
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx

from devops.client import API_VERSION, run_request_body, runs_endpoint
from relay.composition import load_rules_file
from webhook.delivery import Delivery
from webhook.errors import RelayError
from webhook.routing import route_event
from webhook.rules import RouteRules

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@cache
def _rules() -> RouteRules:
    return load_rules_file(Path(os.environ["ROUTES_FILE"]))


@cache
def _client() -> httpx.AsyncClient:
    # Built on first use inside the worker's event loop, which lives as long as the process.
    verify = ssl.create_default_context(cafile=os.environ["DEVOPS_CA_BUNDLE"])
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)  # the relay's (relay/composition.py)
    return httpx.AsyncClient(verify=verify, limits=limits, headers={"User-Agent": "mlflow-devops-relay/0.1"})


def _answer(status: int, document: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(document), status_code=status, mimetype="application/json")


@app.function_name("MLflowWebHookTransition")
@app.route(route="MLflowWebHookTransition", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def mlflow_webhook_transition(req: func.HttpRequest) -> func.HttpResponse:
    now = time.time()
    try:
        delivery = Delivery.from_http(dict(req.headers), req.get_body())
        delivery.verify(secrets=[os.environ["WEBHOOK_SECRET"]], now=now, max_age=600)
        runs = route_event(_rules(), delivery.parse(now=now, max_age=600), default_project=os.environ["DEVOPS_PROJECT"])
    except RelayError as exc:
        return _answer(exc.status, {"status": "error", "detail": exc.detail})
    token = base64.b64encode(f":{os.environ['DEVOPS_PAT']}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
    client = _client()
    responses = await asyncio.gather(
        *(
            client.post(
                f"{runs_endpoint(os.environ['DEVOPS_ORG_URL'], run)}?api-version={API_VERSION}",
                json=run_request_body(run),
                headers=headers,
                timeout=120,
            )
            for run in runs
        )
    )
    if any(r.status_code != 200 for r in responses):
        return _answer(502, {"status": "failed", "detail": [r.status_code for r in responses]})
    started = [
        {"rule": run.rule, "pipeline_id": run.pipeline_id, "run_id": r.json().get("id")}
        for run, r in zip(runs, responses, strict=True)
    ]
    return _answer(200, {"status": "triggered", "runs": started})

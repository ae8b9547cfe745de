"""The seed's approach, for the benchmark's peer row: the original example's client.

The example relayed the registry event to Azure DevOps with the ``azure-devops`` SDK and a PAT
from an app setting: a ``Connection`` with ``BasicAuthentication``, then the pipelines client's
``run_pipeline``. This function does that with the bench's delivery and answers with the run id.
It does less than the relay: no signature check, no ledger (a repeat starts a second run), no
Key Vault, no retry. So its figures are what the SDK costs, a lower bound for that approach.
Benchmark code: not part of the app, never deployed (``bench/`` is outside the package).
"""

from __future__ import annotations

import json
import os

import azure.functions as func
from azure.devops.connection import Connection
from azure.devops.v7_0.pipelines.models import RunPipelineParameters
from msrest.authentication import BasicAuthentication

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
_clients: dict[str, object] = {}


def _pipelines() -> object:
    """The SDK's pipelines client, made once per process (its first call asks DevOps for routes)."""
    if "pipelines" not in _clients:
        connection = Connection(
            base_url=os.environ["DEVOPS_ORG_URL"], creds=BasicAuthentication("", os.environ["DEVOPS_PAT"])
        )
        _clients["pipelines"] = connection.clients.get_pipelines_client()
    return _clients["pipelines"]


@app.function_name("MLflowWebHookTransition")
@app.route(route="MLflowWebHookTransition", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def mlflow_webhook_transition(req: func.HttpRequest) -> func.HttpResponse:
    event = json.loads(req.get_body())
    data = event.get("data") or {}
    parameters = {
        "model_name": data.get("name", ""),
        "model_version": str(data.get("version", "")),
        "event": f"{event.get('entity')}.{event.get('action')}",
        "alias": data.get("alias", ""),
        "delivery_id": req.headers.get("X-MLflow-Delivery-Id", ""),
    }
    run = _pipelines().run_pipeline(  # type: ignore[attr-defined]
        run_parameters=RunPipelineParameters(template_parameters=parameters),
        project=os.environ["DEVOPS_PROJECT"],
        pipeline_id=int(os.environ["SEED_PIPELINE_ID"]),
    )
    return func.HttpResponse(json.dumps({"status": "triggered", "run_id": run.id}), mimetype="application/json")

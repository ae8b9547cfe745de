"""Run inside the fresh virtualenv, on the copied deployment package: index and call the app.

Usage: ``python -I probe_package.py APP_DIR REPORT_JSON FORBIDDEN_ROOT``. Does what the Python
worker does at start (put the app folder on ``sys.path``, import ``function_app``, index it once),
then calls the webhook function with a correctly signed, a wrongly signed and a GET delivery.
Writes a JSON report for the test to judge; it asserts nothing itself. Standard library and the
package's own requirements only: this file must not import anything from the repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

WEBHOOK_FUNCTION = "MLflowWebHookTransition"


class CollectingOut:
    """Stands in for ``func.Out[...]`` output bindings."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def sample_body() -> bytes:
    event = {
        "event": "MODEL_VERSION_TRANSITIONED_STAGE",
        "webhook_id": "deploy-probe",
        "event_timestamp": int(time.time() * 1000),
        "model_name": "wine-model",
        "version": "3",
        "to_stage": "Staging",
        "from_stage": "None",
        "text": "",
    }
    return json.dumps(event).encode()


def call(function: Any, bindings: list[dict[str, Any]], request: Any, app_dir: Path) -> dict[str, Any]:
    user_function = function.get_user_function()
    kwargs: dict[str, Any] = {}
    for binding in bindings:
        if binding["type"] == "httpTrigger":
            kwargs[binding["name"]] = request
        elif binding["direction"] == "OUT" and binding["name"] != "$return":
            kwargs[binding["name"]] = CollectingOut()
    if "context" in inspect.signature(user_function).parameters:
        kwargs["context"] = SimpleNamespace(
            invocation_id="deploy-probe",
            function_name=WEBHOOK_FUNCTION,
            function_directory=str(app_dir),
            trace_context=None,
            retry_context=None,
        )
    response = user_function(**kwargs)
    if inspect.isawaitable(response):
        response = asyncio.run(response)  # type: ignore[arg-type]
    return {
        "status_code": response.status_code,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "mimetype": response.mimetype,
        "body": response.get_body().decode("utf-8", "replace"),
    }


def main(app_dir: Path, report_path: Path, forbidden_root: Path) -> None:
    sys.path.insert(0, str(app_dir))
    import azure.functions as func

    import function_app

    report: dict[str, Any] = {"functions": {}, "answers": {}}
    functions = function_app.app.get_functions()  # once: a second call raises
    for function in functions:
        report["functions"][function.get_function_name()] = json.loads(function.get_function_json())

    webhook = next((f for f in functions if f.get_function_name() == WEBHOOK_FUNCTION), None)
    if webhook is not None:
        bindings = report["functions"][WEBHOOK_FUNCTION]["bindings"]
        body = sample_body()
        secret = os.environ["WEBHOOK_SECRET"]
        cases = {
            "signed": ("POST", hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()),
            "wrongly_signed": ("POST", hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()),
            "get": ("GET", hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()),
        }
        for case, (method, signature) in cases.items():
            request = func.HttpRequest(
                method=method,
                url=f"http://localhost:7071/api/{WEBHOOK_FUNCTION}",
                headers={"Content-Type": "application/json", "X-Databricks-Signature": signature},
                params={},
                route_params={},
                body=body,
            )
            report["answers"][case] = call(webhook, bindings, request, app_dir)

    forbidden = forbidden_root.resolve()
    module_files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
    report["modules_from_repository"] = sorted(
        name for name, file in module_files.items() if file and Path(file).resolve().is_relative_to(forbidden)
    )
    report["function_app_file"] = function_app.__file__
    report_path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), Path(sys.argv[3]))

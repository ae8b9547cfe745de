"""A loopback Databricks workspace for the administration APIs ``mlflow-relay sync`` uses.

``standins.databricks`` answers what a deployment uses (run-now, runs, comments, SQL statements);
this one answers what registration uses, over TLS the way the service does: registry webhooks
(``/api/2.0/mlflow/registry-webhooks/*``: the secret is stored, never returned; the model must
exist; the URL must be https) and Jobs 2.2
(``/api/2.2/jobs/*``: paged lists, server defaults added to what ``get`` returns, trigger
validation, at most 100 model update triggers). A wrong or missing token gets 401; ``faults``
hands out one-shot error answers (429 with Retry-After, 503). Every request is recorded.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standins.http import StandInHandler
from standins.tls import TLSStandIn

DATABRICKS_HOST = "https://adb-1.azuredatabricks.net"
REGISTRY_EVENTS = frozenset(
    {
        "MODEL_VERSION_CREATED",
        "MODEL_VERSION_TRANSITIONED_STAGE",
        "TRANSITION_REQUEST_CREATED",
        "COMMENT_CREATED",
        "REGISTERED_MODEL_CREATED",
        "MODEL_VERSION_TAG_SET",
        "MODEL_VERSION_TRANSITIONED_TO_STAGING",
        "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
        "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
        "TRANSITION_REQUEST_TO_STAGING_CREATED",
        "TRANSITION_REQUEST_TO_PRODUCTION_CREATED",
        "TRANSITION_REQUEST_TO_ARCHIVED_CREATED",
    }
)
MODEL_CONDITIONS = frozenset({"MODEL_CREATED", "MODEL_VERSION_READY", "MODEL_ALIAS_SET"})
MAX_MODEL_TRIGGERS = 100  # per workspace
JOBS_PAGE = 20  # the Jobs API's default page size
# What the Jobs API fills in on create: ``get`` returns these too, so a client must not expect
# its own settings back verbatim.
JOB_DEFAULTS = {"email_notifications": {}, "webhook_notifications": {}, "timeout_seconds": 0, "format": "MULTI_TASK"}
TASK_DEFAULTS = {"run_if": "ALL_SUCCESS", "timeout_seconds": 0, "email_notifications": {}}


class ApiError(Exception):
    """An error answer in the Databricks shape: ``{"error_code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass
class DatabricksAdminStandIn(TLSStandIn):
    """Start with ``start()``; ``host`` is the workspace URL, ``token`` the PAT it accepts."""

    workdir: Path
    token: str = "dapi-standin-not-a-credential"
    models: set[str] = field(default_factory=set)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> webhook, secret included
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # job_id -> settings as stored
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)  # (path prefix, status, headers)

    thread_name = "databricks-admin-standin"

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._next_id = 1000
        self._init_tls(self.workdir)

    def handler_class(self) -> type[_Handler]:
        return _Handler

    @property
    def host(self) -> str:
        return self.base_url

    def sent(self, method: str, path: str) -> list[dict[str, Any]]:
        """The bodies (or queries) of the recorded requests to ``method path``."""
        return [r["body"] for r in self.requests if (r["method"], r["path"]) == (method, path)]

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- registry webhooks ------------------------------------------------------------------
    def public_webhook(self, hook: dict[str, Any]) -> dict[str, Any]:
        shown = copy.deepcopy(hook)
        shown.get("http_url_spec", {}).pop("secret", None)
        return shown

    def _webhook_fields(self, body: dict[str, Any], hook: dict[str, Any]) -> None:
        events = body.get("events", hook.get("events"))
        if not events or not set(events) <= REGISTRY_EVENTS:
            raise _invalid(f"Invalid events: {events}")
        spec = body.get("http_url_spec")
        if spec is not None:
            if not str(spec.get("url", "")).startswith("https://"):
                raise _invalid("http_url_spec.url must use https")
            hook["http_url_spec"] = {"enable_ssl_verification": True, **spec}
        hook.update(events=list(events), status=body.get("status", hook.get("status", "ACTIVE")))
        if "description" in body:
            hook["description"] = body["description"]

    def registry_webhooks(self, method: str, action: str, body: dict[str, Any], query: dict[str, str]) -> Any:
        if (method, action) == ("GET", "list"):
            model = query.get("model_name")
            found = [
                self.public_webhook(h) for h in self.webhooks.values() if not model or h.get("model_name") == model
            ]
            return {"webhooks": found} if found else {}
        if (method, action) == ("POST", "create"):
            if body.get("model_name") and body["model_name"] not in self.models:
                raise ApiError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"Registered model '{body['model_name']}' does not exist."
                )
            if "http_url_spec" not in body:
                raise _invalid("http_url_spec or job_spec is required")
            hook: dict[str, Any] = {"id": f"wh{self.new_id()}", "creation_timestamp": 1, "last_updated_timestamp": 1}
            if body.get("model_name"):
                hook["model_name"] = body["model_name"]
            self._webhook_fields(body, hook)
            self.webhooks[hook["id"]] = hook
            return {"webhook": self.public_webhook(hook)}
        webhook_id = body.get("id") or query.get("id", "")
        if webhook_id not in self.webhooks:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Webhook '{webhook_id}' does not exist.")
        if (method, action) == ("PATCH", "update"):
            self._webhook_fields(body, self.webhooks[webhook_id])
            return {"webhook": self.public_webhook(self.webhooks[webhook_id])}
        if (method, action) == ("DELETE", "delete"):
            del self.webhooks[webhook_id]
            return {}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {action}'")

    # -- jobs -------------------------------------------------------------------------------
    def _validated(self, settings: dict[str, Any], job_id: int | None) -> dict[str, Any]:
        tasks = settings.get("tasks") or []
        environments = {e.get("environment_key") for e in settings.get("environments") or []}
        for task in tasks:
            wheel = task.get("python_wheel_task")
            if wheel is not None and not (wheel.get("package_name") and wheel.get("entry_point")):
                raise _invalid(f"Task {task.get('task_key')}: python_wheel_task needs package_name and entry_point")
            if task.get("environment_key") and task["environment_key"] not in environments:
                raise _invalid(f"Task {task.get('task_key')} refers to an unknown environment")
        model = (settings.get("trigger") or {}).get("model")
        if model is not None:
            if model.get("condition") not in MODEL_CONDITIONS:
                raise _invalid(f"Invalid model trigger condition {model.get('condition')!r}")
            aliases = model.get("aliases") or []
            if bool(aliases) != (model["condition"] == "MODEL_ALIAS_SET") or len(aliases) > 10:
                raise _invalid("aliases: 1 to 10 are required with MODEL_ALIAS_SET, and only with it")
            others = [j for i, j in self.jobs.items() if i != job_id and (j.get("trigger") or {}).get("model")]
            if len(others) >= MAX_MODEL_TRIGGERS:
                raise ApiError(400, "QUOTA_EXCEEDED", f"at most {MAX_MODEL_TRIGGERS} model update triggers")
        stored = {**JOB_DEFAULTS, **copy.deepcopy(settings)}
        stored["tasks"] = [{**TASK_DEFAULTS, **t} for t in stored.get("tasks") or []]
        return stored

    def _job(self, job_id: int) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise _invalid(f"Job {job_id} does not exist.")
        return self.jobs[job_id]

    def jobs_api(self, method: str, action: str, body: dict[str, Any], query: dict[str, str]) -> Any:
        if (method, action) == ("GET", "list"):
            start = int(query.get("page_token") or 0)
            limit = int(query.get("limit") or JOBS_PAGE)
            ids = sorted(self.jobs, reverse=True)[start : start + limit]
            expand = query.get("expand_tasks") == "true"
            listed = [
                {
                    "job_id": i,
                    "created_time": 1,
                    "settings": {k: v for k, v in self.jobs[i].items() if expand or k not in ("tasks", "job_clusters")},
                }
                for i in ids
            ]
            more = start + limit < len(self.jobs)
            return {"jobs": listed, "has_more": more, **({"next_page_token": str(start + limit)} if more else {})}
        if (method, action) == ("GET", "get"):
            job_id = int(query.get("job_id", "0"))
            return {"job_id": job_id, "created_time": 1, "settings": copy.deepcopy(self._job(job_id))}
        if (method, action) == ("POST", "create"):
            job_id = self.new_id()
            self.jobs[job_id] = self._validated(body, None)
            return {"job_id": job_id}
        if (method, action) == ("POST", "reset"):
            self._job(int(body["job_id"]))
            self.jobs[int(body["job_id"])] = self._validated(body["new_settings"], int(body["job_id"]))
            return {}
        if (method, action) == ("POST", "delete"):
            self._job(int(body["job_id"]))
            del self.jobs[int(body["job_id"])]
            return {}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {action}'")


class _Handler(StandInHandler):
    owner: DatabricksAdminStandIn

    def _handle(self, method: str) -> None:
        owner, url = self.owner, urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = json.loads(raw) if raw else query
        with owner.lock:
            owner.requests.append(
                {
                    "method": method,
                    "path": url.path,
                    "body": body,
                    "headers": {k: v for k, v in self.headers.items() if k != "Authorization"},
                }
            )
            fault = next((f for f in owner.faults if url.path.startswith(f[0])), None)
            if fault is not None:
                owner.faults.remove(fault)
        if url.path == "/.well-known/databricks-config":
            self._json(404, {"error_code": "NOT_FOUND", "message": "Not Found"})
        elif self.headers.get("Authorization") != f"Bearer {owner.token}":
            self._json(401, {"error_code": "401", "message": "Credential was not sent or was of an unsupported type"})
        elif fault is not None:
            self._json(fault[1], {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try again"}, fault[2])
        else:
            self._answer(method, url.path, body, query)

    def _answer(self, method: str, path: str, body: dict[str, Any], query: dict[str, str]) -> None:
        apis = {
            "/api/2.0/mlflow/registry-webhooks/": self.owner.registry_webhooks,
            "/api/2.2/jobs/": self.owner.jobs_api,
        }
        prefix = next((p for p in apis if path.startswith(p)), None)
        try:
            if prefix is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
            with self.owner.lock:
                answer = apis[prefix](method, path.removeprefix(prefix), body, query)
        except ApiError as exc:
            self._json(exc.status, {"error_code": exc.code, "message": exc.message})
        else:
            self._json(200, answer)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

"""Databricks for tests: a token-free ``WorkspaceClient`` for ``responses``, and a loopback stand-in.

``fake_workspace`` is a real ``WorkspaceClient`` whose requests ``responses`` answers.

``DatabricksStandIn`` serves, over TLS on 127.0.0.1, the parts of the REST API the pipeline
steps and the job use, with the service's behaviour where they depend on it:

- Jobs API 2.2: ``run-now`` (the idempotency token returns the existing run), ``runs/get`` (a
  run walks PENDING -> RUNNING -> TERMINATED on successive polls, as its ``RunPlan`` says),
  ``runs/cancel`` (TERMINATING on the next poll, then TERMINATED/CANCELED "Run cancelled.";
  cancelling an ended run changes nothing), ``jobs/get`` (the job's parameters).
- Workspace registry comments: ``mlflow/comments/create``.
- SQL Statement Execution: ``sql/statements`` runs the audit sink's ``CREATE TABLE IF NOT
  EXISTS`` and ``INSERT`` into in-memory tables; a statement can finish at once, stay PENDING
  for a number of polls, or FAIL with Databricks' error shape; an unknown warehouse gets 404.
- A wrong bearer token gets 401; faults (429 + Retry-After, 503) can be injected per request.
Every request is recorded (method, path, JSON body).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from standins.http import StandInHandler
from standins.tls import TLSStandIn

DATABRICKS_HOST = "https://adb-1.azuredatabricks.net"
STANDIN_TOKEN = "standin-databricks-token"  # a value the stand-in accepts; not a credential anywhere


def fake_workspace(host: str = DATABRICKS_HOST) -> Any:
    """A ``WorkspaceClient`` whose credential is a fixed header: no token, no network.

    Build it under ``responses``: the SDK first asks the host for its metadata, which gets a
    404 here so the explicit configuration is used.
    """
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    responses.add(responses.GET, f"{host}/.well-known/databricks-config", status=404)
    return WorkspaceClient(config=Config(host=host, credentials_strategy=_fixed_bearer("unit-test-not-a-credential")))


def _fixed_bearer(token: str) -> Any:
    from databricks.sdk.credentials_provider import CredentialsStrategy

    class FixedBearer(CredentialsStrategy):
        def auth_type(self) -> str:
            return "unit-test"

        def __call__(self, cfg: Any) -> Any:
            return lambda: {"Authorization": f"Bearer {token}"}

    return FixedBearer()


@dataclass(frozen=True)
class RunPlan:
    """How a new run behaves: polls spent PENDING and RUNNING, then its result (``None``: runs until cancelled)."""

    pending_polls: int = 0
    running_polls: int = 1
    result: str | None = "SUCCESS"
    message: str = ""


@dataclass
class StandInRun:
    run_id: int
    job_id: int
    job_parameters: dict[str, str]
    idempotency_token: str | None
    plan: RunPlan
    polls: int = 0
    cancel_requested_at: int | None = None  # poll count when the cancel arrived

    def state(self) -> dict[str, str]:
        if self.cancel_requested_at is not None:
            if self.polls <= self.cancel_requested_at + 1:
                return {"life_cycle_state": "TERMINATING", "state_message": ""}
            return {"life_cycle_state": "TERMINATED", "result_state": "CANCELED", "state_message": "Run cancelled."}
        if self.polls <= self.plan.pending_polls:
            return {"life_cycle_state": "PENDING", "state_message": "Waiting for compute"}
        if self.plan.result is None or self.polls <= self.plan.pending_polls + self.plan.running_polls:
            return {"life_cycle_state": "RUNNING", "state_message": ""}
        return {"life_cycle_state": "TERMINATED", "result_state": self.plan.result, "state_message": self.plan.message}

    @property
    def ended(self) -> bool:
        return self.state()["life_cycle_state"] == "TERMINATED"


@dataclass
class DatabricksStandIn(TLSStandIn):
    """Start with ``start()``; ``url`` is the workspace host, ``tls.ca_file`` what a client trusts."""

    workdir: Path
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # job id -> settings
    run_plan: Callable[[int], RunPlan] = lambda job_id: RunPlan()
    warehouses: set[str] = field(default_factory=lambda: {"wh-1"})
    statement_plan: Callable[[str], tuple[int, str | None]] = lambda sql: (0, None)  # (pending polls, error)
    faults: Callable[[str, str], tuple[int, str | None] | None] = lambda method, path: None  # -> (status, retry_after)
    token: str = STANDIN_TOKEN
    runs: dict[int, StandInRun] = field(default_factory=dict)
    comments: list[dict[str, str]] = field(default_factory=list)
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    thread_name = "databricks-standin"

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._ids = itertools.count(1000)
        self.statements: dict[str, dict[str, Any]] = {}
        self._init_tls(self.workdir)

    def handler_class(self) -> type[_Handler]:
        return _Handler

    @property
    def url(self) -> str:
        return self.base_url

    def workspace(self, *, retry_timeout_seconds: int = 5) -> Any:
        """A real ``WorkspaceClient`` for this stand-in (set ``REQUESTS_CA_BUNDLE`` to ``tls.ca_file``)."""
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        config = Config(
            host=self.url, credentials_strategy=_fixed_bearer(self.token), retry_timeout_seconds=retry_timeout_seconds
        )
        return WorkspaceClient(config=config)

    def calls(self, method: str, path: str) -> list[Any]:
        """Bodies (or queries) of the recorded requests to ``method path``."""
        with self.lock:
            return [body for m, p, body in self.requests if (m, p) == (method, path)]

    def run_page_url(self, run: StandInRun) -> str:
        return f"{self.url}/jobs/{run.job_id}/runs/{run.run_id}"

    # -- the API, called by the handler under self.lock ------------------------------------
    def run_now(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job_id = int(body.get("job_id", 0))
        if job_id not in self.jobs:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
        token = body.get("idempotency_token")
        existing = next((r for r in self.runs.values() if token and r.idempotency_token == token), None)
        run = existing or StandInRun(
            next(self._ids), job_id, dict(body.get("job_parameters") or {}), token, self.run_plan(job_id)
        )
        self.runs[run.run_id] = run
        return 200, {"run_id": run.run_id, "number_in_job": run.run_id}

    def get_run(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(int(query.get("run_id", "0")))
        if run is None:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Run {query.get('run_id')} does not exist.")
        run.polls += 1
        document = {
            "run_id": run.run_id,
            "job_id": run.job_id,
            "run_page_url": self.run_page_url(run),
            "state": run.state(),
            "job_parameters": [{"name": k, "value": v} for k, v in run.job_parameters.items()],
        }
        return 200, document

    def cancel_run(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(int(body.get("run_id", 0)))
        if run is None:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Run {body.get('run_id')} does not exist.")
        if not run.ended and run.cancel_requested_at is None:
            run.cancel_requested_at = run.polls
        return 200, {}

    def get_job(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        job_id = int(query.get("job_id", "0"))
        if job_id not in self.jobs:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
        return 200, {"job_id": job_id, "settings": self.jobs[job_id]}

    def create_comment(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        comment = {"name": body["name"], "version": str(body["version"]), "comment": body["comment"]}
        self.comments.append(comment)
        return 200, {"comment": {"comment": comment["comment"], "id": str(len(self.comments))}}

    def execute_statement(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("warehouse_id") not in self.warehouses:
            return 404, _error("RESOURCE_DOES_NOT_EXIST", f"SQL warehouse {body.get('warehouse_id')} does not exist.")
        sql = str(body.get("statement", ""))
        pending, error = self.statement_plan(sql)
        statement_id = f"stmt-{next(self._ids)}"
        values = {p["name"]: p.get("value") for p in body.get("parameters") or []}
        self.statements[statement_id] = {"sql": sql, "values": values, "pending": pending, "error": error}
        return self.get_statement(statement_id)

    def get_statement(self, statement_id: str) -> tuple[int, dict[str, Any]]:
        statement = self.statements.get(statement_id)
        if statement is None:
            return 404, _error("RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} does not exist.")
        if statement["pending"] > 0:
            statement["pending"] -= 1
            return 200, {"statement_id": statement_id, "status": {"state": "PENDING"}}
        if statement["error"]:
            code, _, message = statement["error"].partition(":")
            status = {"state": "FAILED", "error": {"error_code": code, "message": message.strip()}}
            return 200, {"statement_id": statement_id, "status": status}
        if not statement.get("done"):
            statement["done"] = True
            self._execute(statement["sql"], statement["values"])
        return 200, {"statement_id": statement_id, "status": {"state": "SUCCEEDED"}}

    def _execute(self, sql: str, values: dict[str, Any]) -> None:
        table = str(values.get("table", ""))
        if re.match(r"\s*CREATE TABLE IF NOT EXISTS IDENTIFIER\(:table\)", sql):
            self.tables.setdefault(table, [])
        elif match := re.match(r"\s*INSERT INTO IDENTIFIER\(:table\)\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)", sql):
            columns = [c.strip() for c in match.group(1).split(",")]
            markers = [m.strip().lstrip(":") for m in match.group(2).split(",")]
            self.tables[table].append({c: values[m] for c, m in zip(columns, markers, strict=True)})
        else:
            raise AssertionError(f"the stand-in does not run this statement: {sql}")


def _error(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "message": message}


class _Handler(StandInHandler):
    owner: DatabricksStandIn

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        owner = self.owner
        if path == "/.well-known/databricks-config":  # the SDK's host discovery; not an API call
            return self._json(404, _error("NOT_FOUND", "Not found"))
        with owner.lock:
            owner.requests.append((method, path, body if method == "POST" else query))
        if self.headers.get("Authorization") != f"Bearer {owner.token}":
            return self._json(401, _error("UNAUTHENTICATED", "Invalid access token."))
        fault = owner.faults(method, path)
        if fault is not None:
            status, retry_after = fault
            extra = {"Retry-After": retry_after} if retry_after else None
            return self._json(status, _error("TEMPORARILY_UNAVAILABLE", "injected fault"), extra)
        routes: dict[tuple[str, str], Callable[[], tuple[int, dict[str, Any]]]] = {
            ("POST", "/api/2.2/jobs/run-now"): lambda: owner.run_now(body),
            ("GET", "/api/2.2/jobs/runs/get"): lambda: owner.get_run(query),
            ("POST", "/api/2.2/jobs/runs/cancel"): lambda: owner.cancel_run(body),
            ("GET", "/api/2.2/jobs/get"): lambda: owner.get_job(query),
            ("POST", "/api/2.0/mlflow/comments/create"): lambda: owner.create_comment(body),
            ("POST", "/api/2.0/sql/statements"): lambda: owner.execute_statement(body),
        }
        if (method, path) not in routes and method == "GET" and path.startswith("/api/2.0/sql/statements/"):
            routes[(method, path)] = lambda: owner.get_statement(path.rsplit("/", 1)[1])
        if (method, path) not in routes:
            return self._json(404, _error("ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'"))
        with owner.lock:
            status, document = routes[(method, path)]()
        self._json(status, document)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

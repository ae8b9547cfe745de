"""A loopback stand-in for Azure DevOps' pipeline-runs API, over TLS, with injectable faults.

It behaves like the service where the relay depends on it: ``POST
/{org}/{project}/_apis/pipelines/{id}/runs?api-version=7.1`` with Basic ``:PAT`` or a Bearer
token; a wrong credential gets DevOps' 203 sign-in page; an undeclared template parameter
gets a 400 with DevOps' message shape; a started run answers 200 with ``id``, ``createdDate``
(seven fractional digits, as DevOps writes it) and ``_links.web.href``. Runs - List (``GET
.../runs``) carries no template parameters, Runs - Get (``GET .../runs/{id}``) does.

Faults are chosen per request by a ``FaultPlan`` (POSTs) and a ``get_faults`` plan (GETs):
429 + Retry-After, 503, slow answers, connection resets, 203, and the ambiguous ones — the run
is created and then the answer is a 5xx, a dropped connection, or nothing for longer than the
caller waits (a hang past the lease). Every request, every started run and every injected
fault (by kind) is recorded.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standins.http import QuietServer, StandInHandler
from standins.tls import LoopbackTLS, make_loopback_tls

RELAY_DEFAULT_PARAMETERS = frozenset(
    {"model_name", "model_version", "event", "from_stage", "to_stage", "alias", "delivery_id"}
)
_RUNS_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs$")
_RUN_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs/(?P<run>\d+)$")
_SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>"


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of (or before) answering normally.

    ``after_create``: the run is started first, then the fault (a 5xx, a reset, a late answer)
    hides that it was: the ambiguous failures.
    """

    kind: str  # "none" | "status" | "slow" | "reset" | "signin"
    status: int = 0
    retry_after: str | None = None
    delay: float = 0.0
    after_create: bool = False

    @property
    def label(self) -> str:
        what = {"status": f"HTTP {self.status}", "slow": f"answer after {self.delay:g} s", "reset": "connection reset",
                "signin": "sign-in page"}.get(self.kind, self.kind)
        return f"devops run created, then {what}" if self.after_create else f"devops {what}"


NO_FAULT = Fault("none")
FaultPlan = Callable[[int], Fault]  # called with the 1-based request number


def no_faults(_: int) -> Fault:
    return NO_FAULT


def random_faults(rate: float, *, seed: int = 7, retry_after: str = "0") -> FaultPlan:
    """429 (with Retry-After) or 503 at ``rate``, at random but reproducibly."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def plan(_: int) -> Fault:
        with lock:
            roll, pick = rng.random(), rng.random()
        if roll >= rate:
            return NO_FAULT
        return Fault("status", 429, retry_after=retry_after) if pick < 0.5 else Fault("status", 503)

    return plan


@dataclass
class StartedRun:
    run_id: int
    created: str
    org: str
    project: str
    pipeline_id: int
    template_parameters: dict[str, str]
    ref_name: str | None
    authorization: str


@dataclass
class DevOpsStandIn:
    """Start with ``start()``; ``org_url`` is what the relay's DEVOPS_ORG_URL should be."""

    workdir: Path
    pat: str | None = "standin-pat"
    bearer_token: str | None = None
    declared_parameters: dict[int, frozenset[str]] = field(default_factory=dict)
    faults: FaultPlan = no_faults
    latency: float = 0.0
    org: str = "contoso"
    runs: list[StartedRun] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    get_faults: FaultPlan = no_faults
    down_pipelines: set[int] = field(default_factory=set)  # POSTs to these answer 503
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.post_count = 0
        self.get_count = 0
        self._lock = threading.Lock()
        self._next_id = 1000
        self.tls: LoopbackTLS = make_loopback_tls(self.workdir / "tls")
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> DevOpsStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        server = QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.request_queue_size = 1024
        server.socket = self.tls.server_context().wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="devops-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def org_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{self.org}"

    # -- behaviour ---------------------------------------------------------------------------
    def _authorised(self, header: str) -> bool:
        if self.pat is not None and header == "Basic " + base64.b64encode(f":{self.pat}".encode()).decode():
            return True
        return self.bearer_token is not None and header == f"Bearer {self.bearer_token}"

    def _start_run(self, org: str, project: str, pipeline_id: int, body: dict[str, Any], auth: str) -> StartedRun:
        params = body.get("templateParameters") or {}
        ref = (((body.get("resources") or {}).get("repositories") or {}).get("self") or {}).get("refName")
        with self._lock:
            self._next_id += 1
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # DevOps: 7 digits
            run = StartedRun(self._next_id, created, org, project, pipeline_id, dict(params), ref, auth)
            self.runs.append(run)
        return run

    def run_json(self, run: StartedRun) -> dict[str, Any]:
        web = f"https://dev.azure.com/{run.org}/{run.project}/_build/results?buildId={run.run_id}"
        return {
            "id": run.run_id, "name": f"20261128.{run.run_id}", "state": "inProgress", "createdDate": run.created,
            "url": f"{self.org_url}/{run.project}/_apis/pipelines/{run.pipeline_id}/runs/{run.run_id}",
            "pipeline": {"id": run.pipeline_id}, "templateParameters": run.template_parameters,
            "_links": {"web": {"href": web}},
        }  # fmt: skip

    def runs_for(self, pipeline_id: int) -> list[StartedRun]:
        with self._lock:
            return [r for r in self.runs if r.pipeline_id == pipeline_id]

    def count_fault(self, fault: Fault) -> None:
        if fault.kind != "none":
            with self._lock:
                self.injected[fault.label] += 1


class _Handler(StandInHandler):
    owner: DevOpsStandIn

    def _reset(self) -> None:
        # RST instead of FIN: SO_LINGER with a zero timeout, then close.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:
        """List runs (no parameters, like the real list) or get one run (with parameters)."""
        owner = self.owner
        path, _, query = self.path.partition("?")
        with owner._lock:
            owner.requests.append(
                {"method": "GET", "path": path, "query": query, "headers": dict(self.headers.items())}
            )
            owner.get_count += 1
            number = owner.get_count
        fault = owner.get_faults(number)
        owner.count_fault(fault)
        if fault.kind == "slow":
            time.sleep(fault.delay)
        if fault.kind == "reset":
            self._reset()
            return
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            self._json(fault.status, {"message": "injected fault", "typeKey": "InjectedFault"}, extra)
            return
        if not owner._authorised(self.headers.get("Authorization", "")):
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
        listing, single = _RUNS_PATH.match(path), _RUN_PATH.match(path)
        if listing:
            runs = sorted(owner.runs_for(int(listing["pipeline"])), key=lambda r: r.run_id, reverse=True)
            value = [{k: v for k, v in owner.run_json(r).items() if k != "templateParameters"} for r in runs]
            self._json(200, {"count": len(value), "value": value})
            return
        found = [r for r in owner.runs_for(int(single["pipeline"])) if r.run_id == int(single["run"])] if single else []
        if found:
            self._json(200, owner.run_json(found[0]))
        else:
            self._json(404, {"message": f"no run at {path}"})

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path, _, query = self.path.partition("?")
        with owner._lock:
            owner.requests.append({"method": "POST", "path": path, "query": query,
                                   "headers": dict(self.headers.items()), "body": raw})  # fmt: skip
            owner.post_count += 1
            number = owner.post_count
        fault = owner.faults(number)
        target = _RUNS_PATH.match(path)
        if target and int(target["pipeline"]) in owner.down_pipelines:
            fault = Fault("status", 503)
        owner.count_fault(fault)
        if owner.latency:
            time.sleep(owner.latency)
        if not fault.after_create and self._fault_answered(fault):
            return
        match = _RUNS_PATH.match(path)
        if match is None or "api-version=7.1" not in query:
            self._json(404, {"message": f"no route for {path}?{query}"})
            return
        if not owner._authorised(self.headers.get("Authorization", "")):
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, {"message": "request body is not JSON", "typeKey": "InvalidRequestException"})
            return
        pipeline_id = int(match["pipeline"])
        declared = owner.declared_parameters.get(pipeline_id, RELAY_DEFAULT_PARAMETERS)
        unexpected = sorted(set(body.get("templateParameters") or {}) - declared)
        if unexpected:
            self._json(400, {
                "message": f"Unexpected parameter '{unexpected[0]}'",
                "typeKey": "PipelineValidationException",
            })  # fmt: skip
            return
        run = owner._start_run(match["org"], match["project"], pipeline_id, body, self.headers.get("Authorization", ""))
        if fault.after_create and self._fault_answered(fault):
            return
        self._json(200, owner.run_json(run))

    def _fault_answered(self, fault: Fault) -> bool:
        """Apply ``fault``; True when it answered (or dropped) the request itself."""
        if fault.kind == "reset":
            self._reset()
            return True
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            self._json(fault.status, {"message": "injected fault", "typeKey": "InjectedFault"}, extra)
            return True
        if fault.kind == "signin":
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return True
        if fault.kind == "slow":
            time.sleep(fault.delay)  # the caller may be gone by now: it answers anyway (or fails to)
        return False

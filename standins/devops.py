"""A loopback stand-in for Azure DevOps' pipeline-runs API, over TLS, with injectable faults.

It behaves like the service where the relay depends on it: ``POST
/{org}/{project}/_apis/pipelines/{id}/runs?api-version=7.1`` with Basic ``:PAT`` or a Bearer
token; a wrong credential gets DevOps' 203 sign-in page; an undeclared template parameter
gets a 400 with DevOps' message shape; a started run answers 200 with ``id`` and
``_links.web.href``. Faults (429 + Retry-After, 503, slow answers, connection resets, 203)
are chosen per request by a ``FaultPlan``. Every request and every started run is recorded.

The ``azure-devops`` SDK (the benchmark's seed peer) finds its routes first: ``OPTIONS
/{org}/_apis`` answers the resource locations (``{"count", "value": [{"id", "area",
"resourceName", "routeTemplate", "resourceVersion", "minVersion", "maxVersion",
"releasedVersion"}]}``), and the SDK then sends the negotiated version in the ``Accept``
header (``application/json;api-version=7.0``), which the API takes as it takes the
``api-version`` query parameter. Azure DevOps lists every location of the organisation; the
stand-in lists only the runs resource, which is all the SDK looks up here.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standins.http import StandInHandler
from standins.tls import LoopbackTLS, ThreadingTLSServer, make_loopback_tls

RELAY_DEFAULT_PARAMETERS = frozenset(
    {"model_name", "model_version", "event", "from_stage", "to_stage", "alias", "delivery_id"}
)
_RUNS_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs$")
_RUN_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs/(?P<run>\d+)$")
# The Pipelines runs resource (its id as in the SDK's pipelines client, its route as Azure
# DevOps' location service lists it). The version range covers what the relay (7.1) and the
# SDK (7.0, 7.1-preview.1) send.
PIPELINES_LOCATIONS = (
    {"id": "7859261e-d2e9-4a68-b820-a5d84cc5bb3d", "area": "pipelines", "resourceName": "runs",
     "routeTemplate": "{project}/_apis/{area}/{pipelineId}/{resource}/{runId}"},
)
API_VERSIONS = {"resourceVersion": 1, "minVersion": "5.1", "maxVersion": "7.2", "releasedVersion": "7.1"}
_API_VERSION = re.compile(r"api-version=(?P<version>\d+\.\d+)")
_SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>"


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of (or before) answering normally."""

    kind: str  # "none" | "status" | "slow" | "reset" | "signin"
    status: int = 0
    retry_after: str | None = None
    delay: float = 0.0
    after_create: bool = False  # "slow": start the run, then answer late


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

    def __post_init__(self) -> None:
        self.post_count = 0
        self._lock = threading.Lock()
        self._next_id = 1000
        self.tls: LoopbackTLS = make_loopback_tls(self.workdir / "tls")
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> DevOpsStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        server = ThreadingTLSServer(("127.0.0.1", 0), Handler, self.tls)
        server.request_queue_size = 1024
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
            created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
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

    @property
    def api_requests(self) -> list[dict[str, Any]]:
        """Every recorded request but anonymous connection warm-ups (``GET {org}/_apis/connectionData``
        without credentials: how the relay opens its connection ahead, ``relay/prefetch.py``)."""
        with self._lock:
            return [r for r in self.requests if not (r["method"] == "GET" and r["path"].endswith(
                "/_apis/connectionData") and "Authorization" not in r["headers"])]

    def runs_for(self, pipeline_id: int) -> list[StartedRun]:
        with self._lock:
            return [r for r in self.runs if r.pipeline_id == pipeline_id]


class _Handler(StandInHandler):
    owner: DevOpsStandIn

    def _reset(self) -> None:
        # RST instead of FIN: SO_LINGER with a zero timeout, then close.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _api_version_ok(self, query: str) -> bool:
        """An ``api-version`` in the query or the ``Accept`` header, within the advertised range."""
        found = _API_VERSION.search(query) or _API_VERSION.search(self.headers.get("Accept", ""))
        if found is None:
            return False
        version = float(found["version"])
        return float(API_VERSIONS["minVersion"]) <= version <= float(API_VERSIONS["maxVersion"])

    def do_OPTIONS(self) -> None:
        """The resource locations (``OPTIONS /{org}/_apis``), as the SDK asks for them first."""
        owner = self.owner
        path, _, query = self.path.partition("?")
        with owner._lock:
            owner.requests.append({"method": "OPTIONS", "path": path, "query": query,
                                   "headers": dict(self.headers.items())})
        if path != f"/{owner.org}/_apis":
            self._json(404, {"message": f"no route for OPTIONS {path}"})
            return
        if not owner._authorised(self.headers.get("Authorization", "")):
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
        value = [{**location, **API_VERSIONS} for location in PIPELINES_LOCATIONS]
        self._json(200, {"count": len(value), "value": value})

    def do_GET(self) -> None:
        """List runs (no parameters, like the real list) or get one run (with parameters)."""
        owner = self.owner
        path, _, query = self.path.partition("?")
        with owner._lock:
            owner.requests.append(
                {"method": "GET", "path": path, "query": query, "headers": dict(self.headers.items())}
            )
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
        if owner.latency:
            time.sleep(owner.latency)
        if fault.kind == "reset":
            self._reset()
            return
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            self._json(fault.status, {"message": "injected fault", "typeKey": "InjectedFault"}, extra)
            return
        if fault.kind == "signin":
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
        if fault.kind == "slow" and not fault.after_create:
            time.sleep(fault.delay)
        match = _RUNS_PATH.match(path)
        if match is None or not self._api_version_ok(query):
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
        if fault.kind == "slow" and fault.after_create:
            time.sleep(fault.delay)
        self._json(200, owner.run_json(run))

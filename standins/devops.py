"""A loopback stand-in for Azure DevOps' pipeline-runs API, over TLS, with injectable faults.

It behaves like the service where the relay depends on it: ``POST
/{org}/{project}/_apis/pipelines/{id}/runs?api-version=7.1`` with Basic ``:PAT`` or a Bearer
token; a wrong PAT gets DevOps' 203 sign-in page, an expired one a 401 saying so, and a Bearer
token of an identity that is not a member of the organisation a 401 ``TF400813``; an
undeclared template parameter gets a 400 with DevOps' message shape; a started run answers 200
with ``id`` and ``_links.web.href``. ``previewRun: true`` validates the same way, starts
nothing and answers the expanded YAML (``finalYaml``). ``GET /{org}/_apis/projects/{project}``
and ``GET /{org}/{project}/_apis/pipelines/{id}`` answer 200 for the projects and pipelines
that exist (any, unless ``projects``/``pipelines`` say which) and 404 otherwise. Faults (429 +
Retry-After, 503, slow answers, connection resets, 203) are chosen per POST by a
``FaultPlan``. Every request, every started run and every accepted preview is recorded.

The ``azure-devops`` SDK (the benchmark's seed peer) finds its routes first: ``OPTIONS
/{org}/_apis`` answers the resource locations (``{"count", "value": [{"id", "area",
"resourceName", "routeTemplate", "resourceVersion", "minVersion", "maxVersion",
"releasedVersion"}]}``), and the SDK then sends the negotiated version in the ``Accept``
header (``application/json;api-version=7.0``), which the API takes as it takes the
``api-version`` query parameter. Azure DevOps lists every location of the organisation; the
stand-in lists only the runs resource, which is all the SDK looks up here.

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
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from standins.http import StandInHandler
from standins.tls import TLSStandIn

RELAY_DEFAULT_PARAMETERS = frozenset(
    {"model_name", "model_version", "event", "from_stage", "to_stage", "alias", "delivery_id"}
)
_RUNS_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs$")
_RUN_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)/runs/(?P<run>\d+)$")
_PIPELINE_PATH = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/pipelines/(?P<pipeline>\d+)$")
_PROJECT_PATH = re.compile(r"^/(?P<org>[^/]+)/_apis/projects/(?P<project>[^/]+)$")
_NON_MEMBER_ID = "00000000-0000-0000-0000-0000000000d7"
# The Pipelines runs resource (its id as in the SDK's pipelines client, its route as Azure
# DevOps' location service lists it). The version range covers what the relay (7.1) and the
# SDK (7.0, 7.1-preview.1) send.
PIPELINES_LOCATIONS = (
    {
        "id": "7859261e-d2e9-4a68-b820-a5d84cc5bb3d",
        "area": "pipelines",
        "resourceName": "runs",
        "routeTemplate": "{project}/_apis/{area}/{pipelineId}/{resource}/{runId}",
    },
)
API_VERSIONS = {"resourceVersion": 1, "minVersion": "5.1", "maxVersion": "7.2", "releasedVersion": "7.1"}
_API_VERSION = re.compile(r"api-version=(?P<version>\d+\.\d+)")
_SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>"


def _basic(pat: str) -> str:
    return "Basic " + base64.b64encode(f":{pat}".encode()).decode()


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
        what = {
            "status": f"HTTP {self.status}",
            "slow": f"answer after {self.delay:g} s",
            "reset": "connection reset",
            "signin": "sign-in page",
        }.get(self.kind, self.kind)
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
class DevOpsStandIn(TLSStandIn):
    """Start with ``start()``; ``org_url`` is what the relay's DEVOPS_ORG_URL should be."""

    workdir: Path
    pat: str | None = "standin-pat"
    bearer_token: str | None = None
    declared_parameters: dict[int, frozenset[str]] = field(default_factory=dict)
    projects: frozenset[str] | None = None  # the projects that exist; None: any
    pipelines: dict[int, str] | None = None  # pipeline id -> name; None: any id exists
    expired_pats: frozenset[str] = frozenset()
    faults: FaultPlan = no_faults
    latency: float = 0.0
    org: str = "contoso"
    runs: list[StartedRun] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    get_faults: FaultPlan = no_faults
    down_pipelines: set[int] = field(default_factory=set)  # POSTs to these answer 503
    injected: Counter[str] = field(default_factory=Counter)

    thread_name = "devops-standin"

    def __post_init__(self) -> None:
        self.post_count = 0
        self.get_count = 0
        self._lock = threading.Lock()
        self._next_id = 1000
        self._init_tls(self.workdir)

    def handler_class(self) -> type[_Handler]:
        return _Handler

    @property
    def org_url(self) -> str:
        return f"{self.base_url}/{self.org}"

    # -- behaviour ---------------------------------------------------------------------------
    def _authorised(self, header: str) -> bool:
        if self.pat is not None and header == _basic(self.pat):
            return True
        return self.bearer_token is not None and header == f"Bearer {self.bearer_token}"

    def refuse(self, handler: StandInHandler, header: str) -> None:
        """Answer an unauthorised request as DevOps does for that kind of credential."""
        if header.startswith("Bearer "):
            message = f"TF400813: The user '{_NON_MEMBER_ID}' is not authorized to access this resource."
            handler._json(401, {"message": message, "typeKey": "UnauthorizedRequestException"})
        elif any(header == _basic(pat) for pat in self.expired_pats):
            message = "Access Denied: The Personal Access Token used has expired."
            handler._json(401, {"message": message, "typeKey": "UnauthorizedRequestException"})
        else:
            handler._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")

    def pipeline_exists(self, project: str, pipeline_id: int) -> bool:
        known_project = self.projects is None or unquote(project) in self.projects
        return known_project and (self.pipelines is None or pipeline_id in self.pipelines)

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
            "id": run.run_id,
            "name": f"20261128.{run.run_id}",
            "state": "inProgress",
            "createdDate": run.created,
            "url": f"{self.org_url}/{run.project}/_apis/pipelines/{run.pipeline_id}/runs/{run.run_id}",
            "pipeline": {"id": run.pipeline_id},
            "templateParameters": run.template_parameters,
            "_links": {"web": {"href": web}},
        }

    @property
    def api_requests(self) -> list[dict[str, Any]]:
        """Every recorded request but anonymous connection warm-ups (``GET {org}/_apis/connectionData``
        without credentials: how the relay opens its connection ahead, ``relay/prefetch.py``)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if not (
                    r["method"] == "GET"
                    and r["path"].endswith("/_apis/connectionData")
                    and "Authorization" not in r["headers"]
                )
            ]

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
            owner.requests.append(
                {"method": "OPTIONS", "path": path, "query": query, "headers": dict(self.headers.items())}
            )
        if path != f"/{owner.org}/_apis":
            self._json(404, {"message": f"no route for OPTIONS {path}"})
            return
        if not owner._authorised(self.headers.get("Authorization", "")):
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
        value = [{**location, **API_VERSIONS} for location in PIPELINES_LOCATIONS]
        self._json(200, {"count": len(value), "value": value})

    def do_GET(self) -> None:
        """A project, a pipeline, the list of a pipeline's runs (no parameters, like the real
        list) or one run (with parameters)."""
        owner = self.owner
        path, _, query = self.path.partition("?")
        warm_up = path.endswith("/_apis/connectionData") and "Authorization" not in self.headers
        with owner._lock:
            owner.requests.append(
                {"method": "GET", "path": path, "query": query, "headers": dict(self.headers.items())}
            )
            if not warm_up:  # GET faults are planned for the API calls, not the connection warm-up
                owner.get_count += 1
            number = owner.get_count
        if warm_up:  # as Azure DevOps does for a caller without credentials
            self._reply(203, _SIGN_IN_PAGE, "text/html; charset=utf-8")
            return
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
        header = self.headers.get("Authorization", "")
        if not owner._authorised(header):
            owner.refuse(self, header)
            return
        if (project := _PROJECT_PATH.match(path)) is not None:
            self._project(unquote(project["project"]))
            return
        if (pipeline := _PIPELINE_PATH.match(path)) is not None:
            self._pipeline(pipeline["project"], int(pipeline["pipeline"]))
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

    def _not_found(self, pipeline_id: int) -> None:
        message = f"Pipeline with id {pipeline_id} not found."
        self._json(404, {"message": message, "typeKey": "PipelineNotFoundException"})

    def _project(self, name: str) -> None:
        if self.owner.projects is not None and name not in self.owner.projects:
            message = f"TF200016: The following project does not exist: {name}."
            self._json(404, {"message": message, "typeKey": "ProjectDoesNotExistWithNameException"})
            return
        project_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
        self._json(200, {"id": project_id, "name": name, "state": "wellFormed", "visibility": "private"})

    def _pipeline(self, project: str, pipeline_id: int) -> None:
        if not self.owner.pipeline_exists(project, pipeline_id):
            self._not_found(pipeline_id)
            return
        name = (self.owner.pipelines or {}).get(pipeline_id, f"pipeline-{pipeline_id}")
        self._json(200, {"id": pipeline_id, "name": name, "folder": "\\", "revision": 1})

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path, _, query = self.path.partition("?")
        with owner._lock:
            owner.requests.append(
                {"method": "POST", "path": path, "query": query, "headers": dict(self.headers.items()), "body": raw}
            )
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
        if match is None or not self._api_version_ok(query):
            self._json(404, {"message": f"no route for {path}?{query}"})
            return
        header = self.headers.get("Authorization", "")
        if not owner._authorised(header):
            owner.refuse(self, header)
            return
        if not owner.pipeline_exists(match["project"], int(match["pipeline"])):
            self._not_found(int(match["pipeline"]))
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
            self._json(
                400,
                {
                    "message": f"Unexpected parameter '{unexpected[0]}'",
                    "typeKey": "PipelineValidationException",
                },
            )
            return
        if body.get("previewRun") is True:
            self._preview(pipeline_id, body)
            return
        run = owner._start_run(match["org"], match["project"], pipeline_id, body, header)
        if fault.after_create and self._fault_answered(fault):
            return
        self._json(200, owner.run_json(run))

    def _preview(self, pipeline_id: int, body: dict[str, Any]) -> None:
        """A preview run: validated like a run, nothing started, the expanded YAML answered."""
        parameters = body.get("templateParameters") or {}
        with self.owner._lock:
            self.owner.previews.append({"pipeline_id": pipeline_id, "templateParameters": dict(parameters)})
        lines = ["parameters:"] + [f"- name: {k}\n  default: {json.dumps(v)}" for k, v in parameters.items()]
        final_yaml = "\n".join([*lines, "stages:", "- stage: deploy"]) + "\n"
        answer = {"id": -1, "name": "", "state": "unknown", "pipeline": {"id": pipeline_id}, "finalYaml": final_yaml}
        self._json(200, answer)

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

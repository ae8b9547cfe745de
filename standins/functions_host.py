"""The Functions host's side of the Python 3.13 worker protocol, driving ``azure-functions-runtime``.

On Python 3.13 the worker in Azure is two layers: a transport (the proxy worker, shipped in the
host image) that receives the host's gRPC ``StreamingMessage``s, and the execution runtime,
``azure-functions-runtime``, pinned in ``requirements.txt``. The transport wraps each message as
``WorkerRequest(name, request=<StreamingMessage>, properties=...)`` and awaits the runtime's
entry point for it, each message in its own task on one event loop:

* ``start_threadpool_executor()``, then ``worker_init_request`` with ``properties={"protos":
  <the compiled messages>, "host": ...}``: the runtime indexes ``function_app.py`` here;
* on a pre-warmed (placeholder) instance, as on Flex Consumption, ``worker_init_request`` for the
  placeholder's empty app and then ``function_environment_reload_request`` with the app's settings
  and folder: the runtime indexes the app there instead;
* ``functions_metadata_request``: the indexed functions and their bindings;
* ``function_load_request`` for each function the host will call;
* ``invocation_request`` for every call; synchronous functions run on the runtime's thread pool
  (``PYTHON_THREADPOOL_THREAD_COUNT``), ``async def`` ones on the event loop.

``FunctionsHost`` plays the host and that transport in-process (no gRPC): it builds the host's
messages as the host fills them for a Python worker that declares ``RawHttpBodyBytes``,
``RpcHttpBodyOnly`` and ``RpcHttpTriggerMetadataRemoved`` (the request body as raw bytes, no
duplicated HTTP trigger metadata; queue messages as text with the queue's trigger metadata), and
reads the runtime's answers. The messages are ``standins/function_rpc.py``.

The app can be indexed once per process (``azure-functions`` refuses a second ``get_functions()``):
use ``FunctionsHost`` in a fresh process, or ``standins/functions_worker.py`` from a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime

from standins.function_rpc import rpc_messages

HOST_VERSION = "4.1041.200"


class WorkerFailure(RuntimeError):
    """The runtime answered a host request with ``StatusResult.Failure``."""


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the runtime reported it to the host."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]  # the raw binding JSON the host registers
    binding_directions: dict[str, int]  # BindingInfo.direction per binding name

    def trigger(self) -> dict[str, Any]:
        triggers = [b for b in self.bindings if b["type"].endswith("Trigger")]
        if len(triggers) != 1:
            raise AssertionError(f"{self.name}: expected one trigger, got {triggers}")
        return triggers[0]


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class InvocationOutcome:
    succeeded: bool
    error: str  # the exception message the runtime reported; "" on success
    return_value: Any  # the InvocationResponse.return_value message, or None


@dataclass
class WorkerRequest:
    """What the 3.13 transport hands the runtime: the message and, on init, the protos and host."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


def _status_ok(result: Any, what: str) -> None:
    rpc = rpc_messages()
    if result.status != rpc.StatusResult.Success:
        raise WorkerFailure(f"{what} failed: {result.exception.message}")


def _json(value: Any) -> Any:
    return rpc_messages().TypedData(json=json.dumps(value))


@dataclass
class FunctionsHost:
    """One worker process's worth of host: index the app once, then invoke its functions."""

    app_dir: Path
    functions: dict[str, IndexedFunction] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.rpc = rpc_messages()
        self.loop = asyncio.new_event_loop()

    def _message(self, **content: Any) -> Any:
        return self.rpc.StreamingMessage(request_id=str(uuid.uuid4()), **content)

    def _properties(self) -> dict[str, Any]:
        return {"protos": self.rpc, "host": self.host}

    async def _init(self, directory: Path) -> None:
        runtime.start_threadpool_executor()
        init = self.rpc.WorkerInitRequest(
            host_version=HOST_VERSION,
            function_app_directory=str(directory),
            worker_directory=str(Path(runtime.__file__).parent),
        )
        response = await runtime.worker_init_request(
            WorkerRequest("WorkerInitRequest", self._message(worker_init_request=init), self._properties())
        )
        _status_ok(response.result, "WorkerInitRequest")

    async def _specialize(self, environment: Mapping[str, str]) -> None:
        reload = self.rpc.FunctionEnvironmentReloadRequest(
            environment_variables=dict(environment), function_app_directory=str(self.app_dir)
        )
        message = self._message(function_environment_reload_request=reload)
        response = await runtime.function_environment_reload_request(
            WorkerRequest("FunctionEnvironmentReloadRequest", message, self._properties())
        )
        _status_ok(response.result, "FunctionEnvironmentReloadRequest")

    async def _index_and_load(self) -> None:
        request = self.rpc.FunctionsMetadataRequest(function_app_directory=str(self.app_dir))
        response = await runtime.functions_metadata_request(
            WorkerRequest("WorkerMetadataRequest", self._message(functions_metadata_request=request))
        )
        _status_ok(response.result, "FunctionsMetadataRequest")
        for metadata in response.function_metadata_results:
            load = self.rpc.FunctionLoadRequest(function_id=metadata.function_id, metadata=metadata)
            loaded = await runtime.function_load_request(
                WorkerRequest("FunctionLoadRequest", self._message(function_load_request=load))
            )
            _status_ok(loaded.result, f"FunctionLoadRequest({metadata.name})")
            self.functions[metadata.name] = IndexedFunction(
                metadata.name,
                metadata.function_id,
                tuple(json.loads(raw) for raw in metadata.raw_bindings),
                {name: info.direction for name, info in metadata.bindings.items()},
            )

    def start(self) -> FunctionsHost:
        """Dedicated-plan start: the worker indexes the app on ``WorkerInitRequest``.

        Raises:
            WorkerFailure: the runtime reported a failure (an import or indexing error, say).
        """
        self._on_path()
        self.loop.run_until_complete(self._init(self.app_dir))
        self.loop.run_until_complete(self._index_and_load())
        return self

    def start_specialized(
        self, placeholder_dir: Path, environment: Mapping[str, str], *, restore: bool = True
    ) -> FunctionsHost:
        """Flex/Consumption start: init on an empty placeholder app, then specialise to this one.

        The reload replaces the process environment with ``environment`` and changes the working
        directory to the app folder, as on a real instance. With ``restore`` the caller's
        environment and working directory come back afterwards (a host inside another program).

        Raises:
            WorkerFailure: the runtime reported a failure.
        """
        self._on_path()
        self.loop.run_until_complete(self._init(placeholder_dir))
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        try:
            self.loop.run_until_complete(self._specialize(environment))
        finally:
            if restore:
                os.environ.clear()
                os.environ.update(saved_env)
                os.chdir(saved_cwd)
        self.loop.run_until_complete(self._index_and_load())
        return self

    def _on_path(self) -> None:
        # The transport puts the app folder on sys.path (after the app's packages) before init.
        if str(self.app_dir) not in sys.path:
            sys.path.append(str(self.app_dir))

    def close(self) -> None:
        runtime.stop_threadpool_executor()
        self.loop.close()

    # --- invocations -------------------------------------------------------------------------

    def _system_metadata(self, name: str) -> Any:
        return _json({"MethodName": name, "UtcNow": datetime.now(UTC).isoformat(), "RandGuid": str(uuid.uuid4())})

    async def _invoke(self, name: str, binding: str, data: Any, metadata: dict[str, Any]) -> InvocationOutcome:
        function = self.functions[name]
        request = self.rpc.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=function.function_id,
            input_data=[self.rpc.ParameterBinding(name=binding, data=data)],
            trigger_metadata={**metadata, "sys": self._system_metadata(name)},
        )
        response = await runtime.invocation_request(
            WorkerRequest("FunctionInvocationRequest", self._message(invocation_request=request))
        )
        if response.invocation_id != request.invocation_id:
            raise AssertionError("the invocation response names another invocation")
        ok = response.result.status == self.rpc.StatusResult.Success
        value = response.return_value if response.HasField("return_value") else None
        return InvocationOutcome(ok, "" if ok else response.result.exception.message, value)

    async def http(
        self, name: str, *, method: str, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> HttpAnswer:
        """Invoke an HTTP-triggered function as the host does for ``<method> /api/<route>``.

        Raises:
            WorkerFailure: the invocation failed (the host would answer 500).
        """
        trigger = self.functions[name].trigger()
        url = f"http://localhost:7071/api/{trigger.get('route', name)}"
        http = self.rpc.RpcHttp(
            method=method, url=url, headers=dict(headers), query=dict(query or {}), body=self.rpc.TypedData(bytes=body)
        )
        outcome = await self._invoke(name, trigger["name"], self.rpc.TypedData(http=http), {})
        if not outcome.succeeded:
            raise WorkerFailure(f"invocation of {name} failed: {outcome.error}")
        answer = outcome.return_value.http
        kind = answer.body.WhichOneof("data")
        if kind == "bytes":
            body = answer.body.bytes
        elif kind in ("string", "json"):
            body = getattr(answer.body, kind).encode()
        else:
            body = b""
        return HttpAnswer(int(answer.status_code), dict(answer.headers), body)

    async def queue(self, name: str, *, text: str, dequeue_count: int = 1) -> InvocationOutcome:
        """Invoke a queue-triggered function with one message, as the queue extension delivers it."""
        trigger = self.functions[name].trigger()
        now = datetime.now(UTC)
        # The host sends binding data as JSON: the runtime cannot decode TypedData.int in trigger metadata.
        metadata = {
            "Id": _json(str(uuid.uuid4())),
            "DequeueCount": _json(dequeue_count),
            "InsertionTime": _json(now.isoformat()),
            "NextVisibleTime": _json((now + timedelta(minutes=10)).isoformat()),
            "ExpirationTime": _json((now + timedelta(days=7)).isoformat()),
            "PopReceipt": _json(f"pop-{time.monotonic_ns()}"),
        }
        return await self._invoke(name, trigger["name"], self.rpc.TypedData(string=text), metadata)

    def run(self, coroutine: Any) -> Any:
        """Run one host call (or a gather of many) on this worker's event loop."""
        return self.loop.run_until_complete(coroutine)

"""A Python worker process running the app through ``azure-functions-runtime``, driven over stdin/stdout.

A worker is a process of its own in Azure, and the app's functions can be indexed only once per
process (``azure-functions`` refuses a second ``get_functions()``), so tests run the runtime
library in a child: ``WorkerProcess`` starts ``python -m standins.functions_worker``, which
plays the host with ``FunctionsHost`` and answers one JSON line per request.

Two starts, as in Azure: ``dedicated`` (the process environment is the app's, indexing happens on
``WorkerInitRequest``) and ``specialized`` (Flex Consumption: the child starts as a placeholder with
an empty app and no settings, and gets the app's folder and settings in the
``FunctionEnvironmentReloadRequest``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from standins.functions_host import HttpAnswer, InvocationOutcome

# What a placeholder instance has before it knows the app: enough to run Python, no settings.
PLACEHOLDER_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")


@dataclass(frozen=True)
class ReportedFunction:
    name: str
    bindings: tuple[dict[str, Any], ...]
    directions: dict[str, int]

    def trigger(self) -> dict[str, Any]:
        [trigger] = [b for b in self.bindings if b["type"].endswith("Trigger")]
        return trigger


class WorkerProcess:
    """The parent's handle on one worker child; use as a context manager."""

    def __init__(
        self,
        app_dir: Path,
        environment: Mapping[str, str],
        *,
        specialized: bool = True,
        max_visibility: int | None = None,
    ) -> None:
        self.app_dir, self.environment, self.specialized = app_dir, dict(environment), specialized
        self.max_visibility = max_visibility
        self.functions: dict[str, ReportedFunction] = {}
        self._log = tempfile.NamedTemporaryFile("w+", prefix="functions-worker-", suffix=".log")  # noqa: SIM115

    def __enter__(self) -> WorkerProcess:
        command = [sys.executable, "-m", "standins.functions_worker", str(self.app_dir)]
        if self.max_visibility is not None:
            command += ["--max-visibility", str(self.max_visibility)]
        if self.specialized:
            placeholder = tempfile.mkdtemp(prefix="placeholder-")
            command += ["--placeholder", placeholder]
            env = {k: v for k, v in os.environ.items() if k in PLACEHOLDER_ENV}
        else:
            env = self.environment
        self._child = subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        if self.specialized:
            self._send({"op": "specialize", "environment": self.environment})
        ready = self._receive()
        self.functions = {
            name: ReportedFunction(name, tuple(f["bindings"]), f["directions"])
            for name, f in ready["functions"].items()
        }
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child.poll() is None:
            self._send({"op": "exit"})
            self._child.wait(timeout=30)
        self._log.close()

    def _send(self, message: dict[str, Any]) -> None:
        assert self._child.stdin is not None
        self._child.stdin.write(json.dumps(message) + "\n")
        self._child.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            self._log.seek(0)
            raise RuntimeError(f"the worker exited ({self._child.wait()}): {self._log.read()[-4000:]}")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("failure"):
            raise RuntimeError(f"the worker failed: {answer['failure']}")
        return answer

    def http(self, function: str, *, method: str, headers: Mapping[str, str], body: bytes) -> HttpAnswer:
        self._send(
            {
                "op": "http",
                "function": function,
                "method": method,
                "headers": dict(headers),
                "body": base64.b64encode(body).decode(),
            }
        )
        answer = self._receive()
        return HttpAnswer(answer["status"], answer["headers"], base64.b64decode(answer["body"]))

    def queue(self, function: str, *, text: str, dequeue_count: int = 1) -> InvocationOutcome:
        self._send({"op": "queue", "function": function, "text": text, "dequeue_count": dequeue_count})
        answer = self._receive()
        return InvocationOutcome(answer["succeeded"], answer["error"], answer["return_value"])


# --- the child -------------------------------------------------------------------------------


def _serve(host: Any, requests: IO[str], answers: IO[str]) -> None:
    def reply(document: dict[str, Any]) -> None:
        answers.write(json.dumps(document) + "\n")
        answers.flush()

    reply(
        {
            "functions": {
                name: {"bindings": list(f.bindings), "directions": f.binding_directions}
                for name, f in host.functions.items()
            }
        }
    )
    for line in requests:
        request = json.loads(line)
        if request["op"] == "exit":
            return
        try:
            if request["op"] == "http":
                answer = host.run(
                    host.http(
                        request["function"],
                        method=request["method"],
                        headers=request["headers"],
                        body=base64.b64decode(request["body"]),
                    )
                )
                reply(
                    {"status": answer.status, "headers": answer.headers, "body": base64.b64encode(answer.body).decode()}
                )
            else:
                outcome = host.run(
                    host.queue(request["function"], text=request["text"], dequeue_count=request["dequeue_count"])
                )
                value = None if outcome.return_value is None else str(outcome.return_value)
                reply({"succeeded": outcome.succeeded, "error": outcome.error, "return_value": value})
        except Exception as exc:  # the parent reports it with the child's log
            reply({"failure": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app_dir", type=Path)
    parser.add_argument("--placeholder", type=Path, help="start as a placeholder, then specialise")
    parser.add_argument("--max-visibility", type=int, help="cap the retry queue's visibility delays (seconds)")
    args = parser.parse_args()
    if args.max_visibility is not None:
        # The fault suite's one compression of time (standins/timescale.py), in this process too.
        import relay.retry_queue

        relay.retry_queue.MAX_VISIBILITY_SECONDS = args.max_visibility
    protocol, sys.stdout = sys.stdout, sys.stderr  # only protocol lines on stdout; prints go to the log
    from standins.functions_host import FunctionsHost

    host = FunctionsHost(args.app_dir.resolve())
    try:
        if args.placeholder:
            request = json.loads(sys.stdin.readline())
            host.start_specialized(args.placeholder, request["environment"], restore=False)
        else:
            host.start()
    except Exception as exc:
        protocol.write(json.dumps({"failure": f"{type(exc).__name__}: {exc}"}) + "\n")
        protocol.flush()
        raise SystemExit(1) from None
    try:
        _serve(host, sys.stdin, protocol)
    finally:
        host.close()


if __name__ == "__main__":
    main()

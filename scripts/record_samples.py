"""Record the known-answer MLflow webhook deliveries the tests use, from a real ``mlflow server``.

    python scripts/record_samples.py [--out tests/samples/mlflow-3.17.2]

Starts the installed MLflow as a server (``standins/mlflow_server.py``: sqlite in a temporary
directory, a free loopback port, a fresh Fernet key for webhook secrets), registers one webhook for
every model-registry event, pointing at a loopback receiver that keeps headers and body bytes
exactly as sent (``standins/webhook_capture.py``), then calls MLflow's ``test_webhook`` and drives
the registry one change at a time, waiting (bounded) for the one delivery each change must produce
before the next. Only when every delivery has arrived, verified and nothing else came does it
replace the ``*.json`` files and ``PROVENANCE.md`` in ``--out``: one file per delivery, in the
format ``tests/conftest.py`` loads (``secret``, ``headers``, ``body``: the exact body as a string).

Any failure (server does not start, a delivery is missing, late, extra or does not verify) is one
line on stderr and exit status 1; the server's log is then kept and named in that line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: make standins/ importable

from standins.mlflow_server import MlflowServer, MlflowServerFailed, start_mlflow_server, stop_mlflow_server
from standins.webhook_capture import CapturedRequest, WebhookCapture

if TYPE_CHECKING:
    from mlflow.entities.webhook import WebhookEventStr

REPO_ROOT = Path(__file__).resolve().parent.parent
# A fixed, fake secret: stored in every sample so the tests can check the recorded signatures.
SAMPLE_SECRET = "whsec-samples-fake-not-a-real-secret-5e0c2a"  # noqa: S105
MODEL = "aott-wine-model"
REGISTRY_EVENTS: tuple[WebhookEventStr, ...] = (
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
)
DELIVERY_TIMEOUT_SECONDS = 20.0  # MLflow delivers from a thread pool a moment after the call returns
SETTLE_SECONDS = 2.0  # after the last delivery: nothing more may arrive
CLIENT_TIMEOUT_SECONDS = "60"  # above the server's own 30 s webhook timeout (test_webhook is synchronous)
HOOK_PATH = "/mlflow-webhook"


class RecordingFailed(RuntimeError):
    """A delivery was missing, unexpected or did not verify; the message says which."""


@dataclass(frozen=True)
class Step:
    """One registry call and the delivery it must produce, saved as ``<name>.json``.

    ``name`` is the event (``entity.action``), then a variant when one event is recorded twice.
    """

    name: str
    call: str  # what was done, for PROVENANCE.md
    run: Callable[[], object]
    model: str = MODEL

    @property
    def event(self) -> str:
        return ".".join(self.name.split(".")[:2])


def _steps(client: Any, webhook_id: str, source: str, run_id: str) -> list[Step]:
    def test_webhook() -> None:
        result = client.test_webhook(webhook_id, event="model_version_alias.created")
        if not result.success:
            raise RecordingFailed(f"test_webhook failed: {result.response_status} {result.error_message or ''}")

    def new_version(description: str) -> Callable[[], object]:
        tags = {"stage_hint": "candidate"}
        # await_creation_for=0: a local source is READY at once; never MLflow's 300 s default poll.
        return partial(
            client.create_model_version, MODEL, source, run_id, tags, description=description, await_creation_for=0
        )

    create_model = partial(client.create_registered_model, MODEL, {"team": "ml"}, "wine quality model")
    set_alias = partial(client.set_registered_model_alias, MODEL, "champion")
    set_tag = partial(client.set_model_version_tag, MODEL, "1", "validation_status", "approved")
    delete_tag = partial(client.delete_model_version_tag, MODEL, "1", "validation_status")
    delete_alias = partial(client.delete_registered_model_alias, MODEL, "champion")
    return [
        Step("model_version_alias.created.test", "test_webhook", test_webhook, model="example_model"),
        Step("registered_model.created", "create the model", create_model),
        Step("model_version.created", "create version 1", new_version("v1")),
        Step("model_version_tag.set", "tag version 1 validation_status=approved", set_tag),
        Step("model_version_alias.created", "alias champion -> version 1", partial(set_alias, "1")),
        Step("model_version.created.v2", "create version 2", new_version("v2")),
        Step("model_version_alias.created.moved", "move alias champion -> version 2", partial(set_alias, "2")),
        Step("model_version_tag.deleted", "delete tag validation_status of version 1", delete_tag),
        Step("model_version_alias.deleted", "delete alias champion", delete_alias),
    ]


def _check(step: Step, request: CapturedRequest) -> None:
    """Raises RecordingFailed unless ``request`` is ``step``'s delivery, signed with the sample secret."""
    try:
        document = json.loads(request.body.decode("utf-8"))
        event, model = f"{document['entity']}.{document['action']}", document["data"]["name"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise RecordingFailed(f"{step.call} produced a body that is not an MLflow event: {error}") from error
    if (event, model) != (step.event, step.model):
        raise RecordingFailed(f"expected {step.event} for {step.model} after {step.call}, got {event} for {model}")
    if request.path != HOOK_PATH or request.header("Content-Length") != str(len(request.body)):
        raise RecordingFailed(f"{step.event}: unexpected path {request.path!r} or Content-Length")
    delivery_id, timestamp, signature = (
        request.header(h) for h in ("X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature")
    )
    if not (delivery_id and timestamp and signature):
        raise RecordingFailed(f"{step.event}: a delivery id, timestamp or signature header is missing")
    # MLflow's documented scheme, computed here independently of the code the samples test.
    message = f"{delivery_id}.{timestamp}.".encode() + request.body
    digest = hmac.new(SAMPLE_SECRET.encode(), message, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, "v1," + base64.b64encode(digest).decode("ascii")):
        raise RecordingFailed(f"{step.event}: X-MLflow-Signature does not verify with the webhook's secret")


def _drive(server: MlflowServer, capture: WebhookCapture) -> list[tuple[Step, CapturedRequest]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    hook = client.create_webhook(
        name="record-samples", url=capture.url + HOOK_PATH, events=list(REGISTRY_EVENTS), secret=SAMPLE_SECRET
    )
    run = client.create_run(client.create_experiment(f"{MODEL}-training"))
    steps = _steps(client, hook.webhook_id, f"{run.info.artifact_uri}/model", run.info.run_id)
    recorded: list[tuple[Step, CapturedRequest]] = []
    for step in steps:
        step.run()
        arrived = capture.wait_for_new(len(recorded), timeout=DELIVERY_TIMEOUT_SECONDS)
        if len(arrived) != 1:
            got = "none" if not arrived else f"{len(arrived)} deliveries"
            raise RecordingFailed(
                f"expected one {step.event} delivery within {DELIVERY_TIMEOUT_SECONDS:.0f} s "
                f"after {step.call}, got {got}"
            )
        _check(step, arrived[0])
        recorded.append((step, arrived[0]))
    late = capture.wait_for_new(len(recorded), timeout=SETTLE_SECONDS)
    if late:
        raise RecordingFailed(f"{len(late)} unexpected delivery(ies) after the last step: {late[0].body[:120]!r}")
    return recorded


def _sample_text(request: CapturedRequest, mlflow_version: str) -> str:
    """The sample file: MLflow's own headers, the body as a string, and every header as received."""
    own = {k: v for k, v in request.header_lines if k.lower() == "content-type" or k.lower().startswith("x-mlflow-")}
    document = {
        "secret": SAMPLE_SECRET,
        "headers": own,
        "body": request.body.decode("utf-8"),
        "note": f"recorded from a real mlflow {mlflow_version} server on loopback by scripts/record_samples.py; "
        "body is the exact raw request body; headers are MLflow's own, wire_headers every header as received",
        "wire_headers": [list(line) for line in request.header_lines],
    }
    return json.dumps(document, indent=2) + "\n"


def _provenance(
    recorded: list[tuple[Step, CapturedRequest]], server: MlflowServer, started: datetime, command: str
) -> str:
    workdir = str(server.workdir)
    port = server.url.rsplit(":", 1)[1]
    server_command = (
        shlex.join(("python", *server.command[1:]))  # server.command[0] is this interpreter's local path
        .replace(workdir, "<tmp>")
        .replace(f"--port {port}", "--port <port>")
    )
    rows = [
        f"| {i} | `{step.name}.json` | `{step.event}` | {step.call} | {request.header('X-MLflow-Timestamp')} |"
        for i, (step, request) in enumerate(recorded, 1)
    ]
    return "\n".join(
        [
            "# Provenance of these samples",
            "",
            "Recorded by `scripts/record_samples.py` from a real `mlflow server` on loopback; do not edit by hand,",
            "run the script again.",
            "",
            f"- mlflow: {version('mlflow')}",
            f"- Python: {platform.python_version()} ({platform.python_implementation()}), {platform.system()}",
            f"- date: {started.isoformat(timespec='seconds')}",
            f"- command: `{command}`",
            f"- server: `{server_command}`, with a fresh Fernet key in MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY,",
            "  MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true",
            f"- webhook: events {', '.join(REGISTRY_EVENTS)}; secret: the `secret` of each file (fake)",
            f"- model versions: source `<run artifact_uri>/model` of a run of experiment `{MODEL}-training`",
            "",
            "## Event sequence observed",
            "",
            "Each call was made only after the previous call's delivery had arrived, so this is both call and",
            f"arrival order; after the last one, nothing more arrived for {SETTLE_SECONDS:.0f} s.",
            "",
            "| # | file | event | call | X-MLflow-Timestamp |",
            "|---|------|-------|------|--------------------|",
            *rows,
            "",
        ]
    )


def _installed_mlflow() -> str:
    try:
        return version("mlflow")
    except PackageNotFoundError:
        raise RecordingFailed(f"mlflow is not installed for {sys.executable} (pip install -e '.[dev]')") from None


def _out_dir(value: str | None) -> Path:
    """Raises RecordingFailed when mlflow is missing or ``--out`` names another MLflow than the installed one."""
    installed = _installed_mlflow()
    out = Path(value) if value else REPO_ROOT / "tests" / "samples" / f"mlflow-{installed}"
    if out.name.startswith("mlflow-") and out.name != f"mlflow-{installed}":
        raise RecordingFailed(f"--out {out} names another MLflow than the installed mlflow {installed}")
    return out


def _write(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.json"), out / "PROVENANCE.md"]:
        stale.unlink(missing_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")


def record(out: Path, workdir: Path, command: str) -> int:
    """Record into ``out``, with the server's files in ``workdir``; returns how many deliveries were saved.

    ``command`` is how the recording was asked for, written to PROVENANCE.md.

    Raises:
        RecordingFailed: a delivery was missing, unexpected or did not verify.
        MlflowServerFailed: the server did not start.
        Exception: MLflow's or the HTTP client's own error from a registry call.
    """
    started = datetime.now(UTC)
    # Bounded client calls: no minutes-long retry ladder when the server dies under us.
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=CLIENT_TIMEOUT_SECONDS)
    server = start_mlflow_server(workdir)
    try:
        with WebhookCapture() as capture:
            recorded = _drive(server, capture)
    finally:
        stop_mlflow_server(server)
    mlflow_version = version("mlflow")
    files = {f"{step.name}.json": _sample_text(request, mlflow_version) for step, request in recorded}
    files["PROVENANCE.md"] = _provenance(recorded, server, started, command)
    _write(out, files)
    return len(recorded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", help="folder for the samples (default: tests/samples/mlflow-<installed version>)")
    args = parser.parse_args(argv)
    command = "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    workdir = Path(tempfile.mkdtemp(prefix="record-samples-"))
    log = workdir / "mlflow-server.log"
    try:
        out = _out_dir(args.out)
        sys.stderr.write(f"record_samples: starting mlflow {_installed_mlflow()} (up to 90 s), then recording\n")
        count = record(out, workdir, command)
    except Exception as error:  # the one place a failure becomes one line and an exit status
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")
        kind = "" if isinstance(error, RecordingFailed | MlflowServerFailed) else f"{type(error).__name__}: "
        kept = f" (server log kept: {log})" if log.exists() else ""
        if not kept:
            shutil.rmtree(workdir, ignore_errors=True)
        sys.stderr.write(f"record_samples: {kind}{first}{kept}\n")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(f"record_samples: {count} deliveries and PROVENANCE.md written to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

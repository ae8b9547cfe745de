"""The Databricks job end to end against a real local MLflow registry (sqlite, no Databricks)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from databricks_job.__main__ import main
from databricks_job.audit import AuditRecord
from databricks_job.job import JobRuntime, run_job
from databricks_job.params import parse_job_args

FIXED_NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, record: AuditRecord) -> None:
        self.records.append(record)


def _runtime(client: Any, sink: RecordingSink, **overrides: Any) -> JobRuntime:
    return JobRuntime(client=client, sink=sink, sleep=lambda s: None, now=lambda: FIXED_NOW, **overrides)


def _tags(registry: Any, name: str, version: str = "1") -> dict[str, str]:
    return dict(registry.client.get_model_version(name, version).tags)


@pytest.fixture
def check_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user check module on sys.path: passes for doubling-safe models, fails when told to."""
    (tmp_path / "relay_user_checks.py").write_text(
        "import pandas as pd\n"
        "def echoes_input(model, context):\n"
        "    frame = pd.DataFrame({'x': [3.0]})\n"
        "    assert model.predict(frame)['x'].tolist() == [3.0], 'model does not echo'\n"
        "def always_false(model, context):\n"
        "    return False\n"
        "def rejects(model, context):\n"
        "    raise ValueError(f'{context.model_name} v{context.model_version} too slow')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "relay_user_checks"


class TestValidatedVersion:
    """A current event for a good model: validated, tagged, audited."""

    def test_alias_event_passes_and_tags_the_version(self, local_registry: Any, check_module: str) -> None:
        name = local_registry.register()
        local_registry.client.set_registered_model_alias(name, "champion", "1")
        sink = RecordingSink()
        params = parse_job_args(
            [
                f"--model-name={name}",
                "--model-version=1",
                "--event=model_version_alias.created",
                "--alias=champion",
                "--delivery-id=1bfda340-c7cc-47c8-857a-e51a449e2e3d",
                "--pipeline-run=https://dev.azure.com/contoso/MLOps/_build/results?buildId=42",
                "--job-run=991",
                f"--checks={check_module}:echoes_input",
            ]
        )

        outcome = run_job(params, _runtime(local_registry.client, sink))

        assert (outcome.outcome, outcome.exit_code) == ("validated", 0)
        tags = _tags(local_registry, name)
        assert tags["validation.status"] == "passed"
        assert tags["validation.checks"] == f"loads,signature,{check_module}:echoes_input"
        assert tags["deployment.status"] == "validated"
        assert tags["deployment.pipeline_run"].endswith("buildId=42")
        assert tags["deployment.delivery_id"] == "1bfda340-c7cc-47c8-857a-e51a449e2e3d"
        assert tags["deployment.job_run"] == "991"
        assert tags["deployment.alias"] == "champion"
        assert [r.outcome for r in sink.records] == ["validated"]
        assert sink.records[0].recorded_at == "2026-11-28T15:30:00+00:00"

    def test_stage_event_passes_when_the_version_is_still_in_that_stage(self, local_registry: Any) -> None:
        name = local_registry.register()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            local_registry.client.transition_model_version_stage(name, "1", "Production")
        params = parse_job_args(
            [f"--model-name={name}", "--model-version=1", "--event=MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"]
        )

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert outcome.outcome == "validated"
        assert _tags(local_registry, name)["deployment.stage"] == "Production"


class TestSupersededEvent:
    """An event overtaken by a later change stops successfully and leaves the tags alone."""

    def test_alias_moved_to_a_later_version(self, local_registry: Any) -> None:
        name = local_registry.register()
        local_registry.client.set_registered_model_alias(name, "champion", local_registry.add_version(name))
        sink = RecordingSink()
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--alias=champion"])

        outcome = run_job(params, _runtime(local_registry.client, sink))

        assert (outcome.outcome, outcome.exit_code) == ("superseded", 0)
        assert "alias 'champion' points to version 2, not version 1" in outcome.message
        assert not any(k.startswith(("deployment.", "validation.")) for k in _tags(local_registry, name))
        assert [r.outcome for r in sink.records] == ["superseded"]

    def test_alias_deleted_since_the_event(self, local_registry: Any) -> None:
        name = local_registry.register()
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--alias=champion"])

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert outcome.outcome == "superseded"
        assert "no longer exists" in outcome.message

    def test_version_left_the_stage(self, local_registry: Any) -> None:
        name = local_registry.register()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            local_registry.client.transition_model_version_stage(name, "1", "Production")
            local_registry.client.transition_model_version_stage(name, "1", "Archived")
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--to-stage=Production"])

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert (outcome.outcome, outcome.exit_code) == ("superseded", 0)
        assert "no longer in Production (now Archived)" in outcome.message


class TestFailedValidation:
    """A bad model fails the job (exit 1) and says why on the version."""

    def test_model_without_signature(self, local_registry: Any) -> None:
        name = local_registry.register(local_registry.unsigned_model_uri)
        params = parse_job_args([f"--model-name={name}", "--model-version=1"])

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert (outcome.outcome, outcome.exit_code) == ("validation_failed", 1)
        tags = _tags(local_registry, name)
        assert tags["validation.status"] == "failed"
        assert "has no signature" in tags["validation.message"]
        assert tags["deployment.status"] == "validation_failed"

    @pytest.mark.parametrize(
        ("check", "expected"),
        [("rejects", "ValueError: model-"), ("always_false", "returned False")],
    )
    def test_user_check_failure(self, local_registry: Any, check_module: str, check: str, expected: str) -> None:
        name = local_registry.register()
        params = parse_job_args([f"--model-name={name}", "--model-version=1", f"--checks={check_module}:{check}"])

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert outcome.exit_code == 1
        assert expected in _tags(local_registry, name)["validation.message"]

    def test_model_that_does_not_load(self, local_registry: Any) -> None:
        name = local_registry.register()

        def broken_loader(uri: str) -> Any:
            raise OSError("artifact store unreachable")

        params = parse_job_args([f"--model-name={name}", "--model-version=1"])
        outcome = run_job(params, _runtime(local_registry.client, RecordingSink(), loader=broken_loader))

        assert outcome.exit_code == 1
        assert "does not load: OSError: artifact store unreachable" in outcome.message

    def test_unknown_check_is_a_parameter_error_recorded_on_the_version(self, local_registry: Any) -> None:
        name = local_registry.register()
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--checks=no_such_module:fn"])

        outcome = run_job(params, _runtime(local_registry.client, RecordingSink()))

        assert (outcome.outcome, outcome.exit_code) == ("error", 2)
        assert _tags(local_registry, name)["validation.status"] == "error"


class PendingFirst:
    """The real client, but the version reports PENDING_REGISTRATION for the first ``n`` reads."""

    def __init__(self, client: Any, pending_reads: int, status: str = "PENDING_REGISTRATION") -> None:
        self._client, self.remaining, self._status = client, pending_reads, status

    def get_model_version(self, name: str, version: str) -> Any:
        model_version = self._client.get_model_version(name, version)
        if self.remaining > 0:
            self.remaining -= 1
            model_version._status = self._status
        return model_version

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._client, attr)


class TestReadiness:
    """Unity Catalog registers asynchronously: the job waits for READY, within a limit."""

    def test_waits_for_pending_registration(self, local_registry: Any) -> None:
        name = local_registry.register()
        client, sleeps = PendingFirst(local_registry.client, 2), []
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--poll-seconds=3"])

        outcome = run_job(params, JobRuntime(client=client, sink=RecordingSink(), sleep=sleeps.append))

        assert outcome.outcome == "validated"
        assert sleeps == [3.0, 3.0]

    def test_gives_up_after_the_timeout(self, local_registry: Any) -> None:
        name = local_registry.register()
        ticks = iter(range(0, 10_000, 10))
        params = parse_job_args([f"--model-name={name}", "--model-version=1", "--ready-timeout-seconds=25"])
        runtime = JobRuntime(
            client=PendingFirst(local_registry.client, 1000),
            sink=RecordingSink(),
            sleep=lambda s: None,
            clock=lambda: float(next(ticks)),
        )

        outcome = run_job(params, runtime)

        assert (outcome.outcome, outcome.exit_code) == ("not_ready", 1)
        assert "still PENDING_REGISTRATION after 25 s" in outcome.message
        assert _tags(local_registry, name)["deployment.status"] == "not_ready"

    def test_failed_registration_fails_at_once(self, local_registry: Any) -> None:
        name = local_registry.register()
        params = parse_job_args([f"--model-name={name}", "--model-version=1"])
        client = PendingFirst(local_registry.client, 1, status="FAILED_REGISTRATION")

        outcome = run_job(params, JobRuntime(client=client, sink=RecordingSink(), sleep=lambda s: None))

        assert outcome.outcome == "not_ready"
        assert "failed to register" in outcome.message


class TestEntryPoint:
    """``python -m databricks_job`` as Databricks runs it: flags in, exit code and audit file out."""

    def test_main_validates_and_appends_an_audit_line(self, local_registry: Any, tmp_path: Path) -> None:
        name = local_registry.register()
        audit = tmp_path / "audit" / "runs.jsonl"
        argv = [
            f"--model-name={name}",
            "--model-version=1",
            "--event=model_version.created",
            f"--registry-uri={local_registry.uri}",
            f"--audit-path={audit}",
            "--alias=",
            "--to-stage=",
        ]

        assert main(argv) == 0
        assert main(argv) == 0  # a re-run appends, it does not overwrite

        rows = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(r["model_name"], r["outcome"]) for r in rows] == [(name, "validated")] * 2

    def test_main_rejects_a_missing_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["--model-name=m", "--event=MODEL_VERSION_TRANSITIONED_TO_STAGING"]) == 2
        assert "--model-version is required" in capsys.readouterr().err

    def test_deletion_event_has_nothing_to_deploy(self, tmp_path: Path) -> None:
        audit = tmp_path / "a.jsonl"
        argv = ["--model-name=m", "--event=model_version_alias.deleted", "--alias=champion"]
        assert main([*argv, f"--audit-path={audit}", "--registry-uri=sqlite:///" + str(tmp_path / "x.db")]) == 0
        assert json.loads(audit.read_text())["outcome"] == "nothing_to_do"

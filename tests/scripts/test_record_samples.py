"""The committed recording is complete, and ``scripts/record_samples.py`` refuses what it must not record."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.record_samples import HOOK_PATH, RecordingFailed, Step, _check
from standins.webhook_capture import CapturedRequest
from tests.recorded_samples import RECORDED_SEQUENCE, SAMPLES_DIR, event_of

REPO_ROOT = Path(__file__).resolve().parents[2]
MLFLOW_HEADERS = {"Content-Type", "X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"}
PROVENANCE_ROW = re.compile(r"^\| (\d+) \| `([^`]+)\.json` \| `([^`]+)` \| [^|]+ \| (\d+) \|$", re.MULTILINE)


def _sample(name: str) -> dict[str, Any]:
    return dict(json.loads((SAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8")))


class TestRecordedSamplesFolder:
    """A partial or hand-edited recording fails here instead of quietly thinning the tests that read it."""

    def test_the_folder_holds_exactly_the_recorded_sequence(self):
        names = sorted(p.name.removesuffix(".json") for p in SAMPLES_DIR.glob("*.json"))
        assert names == sorted(RECORDED_SEQUENCE)

    @pytest.mark.parametrize("name", RECORDED_SEQUENCE)
    def test_each_sample_is_an_mlflow_delivery_of_the_event_it_is_named_for(self, name):
        sample = _sample(name)
        assert set(sample["headers"]) == MLFLOW_HEADERS
        document = json.loads(sample["body"])
        assert f"{document['entity']}.{document['action']}" == event_of(name)
        assert sample["secret"].startswith("whsec-samples-fake-")  # the recorder's fake secret, never a real one
        wire = {k: v for k, v in sample["wire_headers"]}
        assert wire["Content-Length"] == str(len(sample["body"].encode("utf-8")))
        assert {k: wire[k] for k in MLFLOW_HEADERS} == sample["headers"]

    def test_provenance_names_mlflow_python_date_and_command(self):
        text = (SAMPLES_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
        assert "\n- mlflow: 3.17.2\n" in text
        assert re.search(r"\n- Python: 3\.\d+\.\d+ ", text)
        assert re.search(r"\n- date: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n", text)
        assert "\n- command: `python scripts/record_samples.py" in text

    def test_provenance_sequence_describes_these_very_files_in_order(self):
        rows = PROVENANCE_ROW.findall((SAMPLES_DIR / "PROVENANCE.md").read_text(encoding="utf-8"))
        assert [int(number) for number, *_ in rows] == list(range(1, len(RECORDED_SEQUENCE) + 1))
        assert [name for _, name, _, _ in rows] == list(RECORDED_SEQUENCE)
        for _, name, event, timestamp in rows:
            assert event == event_of(name)
            assert timestamp == _sample(name)["headers"]["X-MLflow-Timestamp"]
        assert [int(t) for *_, t in rows] == sorted(int(t) for *_, t in rows)  # one call after another


def _captured(name: str, *, body: bytes | None = None, drop: str | None = None) -> CapturedRequest:
    sample = _sample(name)
    lines = tuple((k, v) for k, v in sample["wire_headers"] if k != drop)
    return CapturedRequest(HOOK_PATH, lines, sample["body"].encode("utf-8") if body is None else body, 0.0)


class TestRecorderChecksEachDelivery:
    """What the recorder accepts, tried on real recorded deliveries."""

    STEP = Step("model_version.created", "create version 1", lambda: None)

    def test_the_recorded_delivery_passes(self):
        _check(self.STEP, _captured("model_version.created"))

    def test_a_delivery_of_another_event_is_refused(self):
        with pytest.raises(RecordingFailed, match=r"expected model_version\.created .* got model_version_tag\.set"):
            _check(self.STEP, _captured("model_version_tag.set"))

    def test_a_body_changed_in_flight_is_refused(self):
        original = _captured("model_version.created").body
        tampered = original.replace(b"aott-wine-model", b"aott-wine-modem")
        assert tampered != original and len(tampered) == len(original)
        with pytest.raises(RecordingFailed, match="does not verify"):
            _check(
                Step("model_version.created", "x", lambda: None, model="aott-wine-modem"),
                _captured("model_version.created", body=tampered),
            )

    def test_an_unsigned_delivery_is_refused(self):
        with pytest.raises(RecordingFailed, match="signature header is missing"):
            _check(self.STEP, _captured("model_version.created", drop="X-MLflow-Signature"))


class TestRecorderCommandLine:
    def test_an_out_folder_naming_another_mlflow_fails_in_one_line_and_writes_nothing(self, tmp_path):
        out = tmp_path / "mlflow-0.0.1"
        result = subprocess.run(
            [sys.executable, "scripts/record_samples.py", "--out", str(out)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("record_samples: ") and "installed mlflow 3.17.2" in result.stderr
        assert not out.exists()

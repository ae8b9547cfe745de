"""The example payloads under ``examples/payloads/``: each is documented, parses as its sender
sends it, and matches the rules examples/README.md says, with the shipped ``routes.yaml``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from relay_tools.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
_ROW = re.compile(r"^\| `(?P<file>payloads/[^`]+)` \| (?P<sender>[^|]+) \| [^|]+ \| (?P<rules>[^|]+) \|$")


def documented() -> dict[str, tuple[str, list[str]]]:
    """file -> (sender, rules) from the table in examples/README.md."""
    rows = {}
    for line in (EXAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        if match := _ROW.match(line):
            text = match["rules"].strip()
            rules = [] if text.startswith("none") else re.findall(r"`([^`]+)`", text)
            rows[match["file"]] = (match["sender"].strip(), rules)
    return rows


def test_every_payload_is_documented() -> None:
    files = sorted(str(p.relative_to(EXAMPLES)) for p in (EXAMPLES / "payloads").glob("*.json"))
    assert files and sorted(documented()) == files


@pytest.mark.parametrize("name", sorted(documented()))
def test_the_payload_matches_the_documented_rules(
    name: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sender, rules = documented()[name]
    assert main(["explain", str(EXAMPLES / name)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched_rules"] == rules
    assert report["event"]["source"] == ("databricks" if sender == "Databricks" else "mlflow")

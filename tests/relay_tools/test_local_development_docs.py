"""The README's local-development block works as written: its secret is the one
``local.settings.json.example`` holds, every ``mlflow-relay`` command in it parses, the files it
names exist, and it writes nothing into the repository."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from relay_tools.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def local_development_block() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Local development\n") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    return block[: block.index("```")].splitlines()


def commands() -> list[list[str]]:
    """Each line's words, comments and trailing ``&`` / ``| sh`` left out."""
    found = []
    for line in local_development_block():
        words = shlex.split(line, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        if "|" in words:
            words = words[: words.index("|")]
        found.append(words)
    return found


def test_the_exported_secret_is_the_example_settings_secret() -> None:
    example = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    exports = [w for words in commands() if words[:1] == ["export"] for w in words[1:]]
    assert f"WEBHOOK_SECRET={example['WEBHOOK_SECRET']}" in exports


def test_every_mlflow_relay_command_parses() -> None:
    relay_commands = [words for words in commands() if words and words[0].endswith("mlflow-relay")]
    assert len(relay_commands) >= 3
    for words in relay_commands:
        build_parser().parse_args(words[1:])


def test_the_files_it_names_exist_and_it_writes_none_into_the_repository() -> None:
    for line in local_development_block():
        code = line.split("#", 1)[0]
        assert not re.search(r"(^|\s)>+\s*(?!/dev/null)[^\s$]", code), f"writes a file: {line}"
        for path in re.findall(r"(?:^|\s|@)([\w./-]+\.json)\b", code) if "mlflow-relay" in code else []:
            # Run from the checkout, every payload it names must ship with it (examples/payloads/).
            assert path.startswith("examples/") and (REPO / path).is_file(), path

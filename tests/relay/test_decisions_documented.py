"""The decision lines: what the code logs, ``relay.decisions.DECISIONS``, the README and
docs/deploy.md name the same decisions, in the same order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from relay.decisions import DECISIONS

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("relay", "webhook", "devops")
_LITERAL_LINE = re.compile(r"relay decision=([a-z_]+)")
_TICKED = re.compile(r"`([a-z_]+)`")


def logged_decisions() -> set[str]:
    """Every decision a ``log_decision(...)`` call or a literal ``relay decision=...`` line names.

    A call with a variable counts the string literals assigned to it in the same function.
    """
    found: set[str] = set()
    for package in RUNTIME_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            found.update(_LITERAL_LINE.findall(source))
            for function in ast.walk(ast.parse(source)):
                if isinstance(function, ast.FunctionDef):
                    found.update(_decisions_in(function, path))
    return found


def _decisions_in(function: ast.FunctionDef, path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(function):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "log_decision"):
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant):
            names.add(first.value)
            continue
        assert isinstance(first, ast.Name), f"{path.name}:{node.lineno}: a decision is a literal or a variable"
        assigned = [
            a.value
            for a in ast.walk(function)
            if isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == first.id for t in a.targets)
        ]
        literals = {
            c.value
            for value in assigned
            for c in ast.walk(value)
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
        }
        assert literals, f"{path.name}:{node.lineno}: cannot tell which decisions {first.id!r} holds"
        names.update(literals)
    return names


def documented_list(path: Path) -> list[str]:
    """The backticked words of the sentence that starts with ``Decisions:``."""
    text = path.read_text(encoding="utf-8")
    start = text.index("Decisions: ")
    sentence = text[start : text.index(".", start)]
    return _TICKED.findall(sentence)


def deploy_table() -> list[str]:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    table = text[text.index("| decision | level | what happened |") :]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        rows.append(_TICKED.match(line[2:]).group(1))  # type: ignore[union-attr]
    return rows


class TestDecisionsAgree:
    def test_the_code_logs_exactly_the_listed_decisions(self) -> None:
        assert logged_decisions() == set(DECISIONS)
        assert len(DECISIONS) == len(set(DECISIONS))

    def test_the_readme_lists_them(self) -> None:
        assert documented_list(REPO / "README.md") == list(DECISIONS)

    def test_the_deploy_guide_lists_them(self) -> None:
        assert documented_list(REPO / "docs" / "deploy.md") == list(DECISIONS)

    def test_the_deploy_guide_explains_each(self) -> None:
        assert deploy_table() == list(DECISIONS)

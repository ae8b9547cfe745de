"""The house's rules, checked on the code's own imports: the core knows no adapter, the runtime
knows no tool, and nothing deployed imports what is not deployed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (top-level name and full name)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in sorted(names)
        if name.split(".")[0] in forbidden or name in forbidden
    ]


class TestLayering:
    def test_the_core_imports_no_adapter_and_no_runtime(self) -> None:
        assert offenders("webhook", ("relay", "devops", "relay_tools", "standins", "azure", "httpx")) == []

    @pytest.mark.parametrize("package", ["relay", "devops"])
    def test_the_runtime_imports_no_tool_and_no_stand_in(self, package: str) -> None:
        assert offenders(package, ("relay_tools", "standins", "tests", "bench")) == []

    def test_the_service_and_the_worker_see_ports_not_adapters(self) -> None:
        adapters = (
            "devops",
            "relay.table_ledger",
            "relay.retry_queue",
            "relay.keyvault",
            "relay.storage_clients",
            "azure",
        )
        for module in ("relay/service.py", "relay/run_attempt.py", "relay/retry_worker.py"):
            names = imported_modules("relay")[module]
            assert not [n for n in names if n in adapters or n.split(".")[0] in ("devops", "azure")], module

    def test_function_app_imports_only_the_runtime(self) -> None:
        tree = ast.parse((ROOT / "function_app.py").read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert all(name.split(".")[0] in ("relay", "azure", "__future__") for name in names), names

"""Parse every Bicep file with pycep and check the zero-secret rules checkov does not know.

checkov exits 0 when a Bicep file does not parse (it logs and skips the file), so this check is the
one that fails on a syntax error. It runs in the checkov virtualenv (pycep-parser comes with
checkov) from ``.ci/check-infra``; no Bicep CLI and no Azure access are needed.

Rules, each with the reason it exists:

- every file parses (otherwise checkov silently scanned nothing);
- no ``@secure()`` parameter and no ``list*()`` call (``listKeys``...): a deployment that takes or
  derives a secret is not zero-secret;
- no app setting carries a secret (``WEBHOOK_SECRET``, ``DEVOPS_PAT``... are local-development
  only) and host storage is identity-based (``AzureWebJobsStorage__credential=managedidentity``,
  no ``AzureWebJobsStorage`` connection string);
- role assignments are named ``guid(<scope>.id, <principal>, <role>)`` with the scope they target;
- Key Vault uses RBAC, soft delete and purge protection; storage refuses shared keys;
  Application Insights refuses instrumentation-key-only ingestion.

Usage: ``python infra/tools/check_bicep.py [DIR]`` (default: the ``infra`` folder holding this file).
Exit status 1 on any finding, with one line per finding on stderr.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycep import BicepParser

SECRET_SETTINGS = frozenset({"WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET", "DEVOPS_PAT", "AzureWebJobsStorage"})
# pycep keeps string interpolations as raw text: look for list*() calls and keys inside them.
LIST_CALL_IN_STRING = re.compile(r"\$\{[^}]*\blist[A-Z]\w*\(")
KEY_IN_STRING = re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=", re.IGNORECASE)
REQUIRED_PROPERTIES = {
    "Microsoft.KeyVault/vaults": {
        "enableRbacAuthorization": True,
        "enableSoftDelete": True,
        "enablePurgeProtection": True,
    },
    "Microsoft.Storage/storageAccounts": {"allowSharedKeyAccess": False},
    "Microsoft.Insights/components": {"DisableLocalAuth": True},
}


def walk(node: Any) -> Iterator[Any]:
    """Yield ``node`` and every value nested in it, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


def resource_body(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a resource's own properties, below any ``for`` loop or ``if`` condition wrapper."""
    body: dict[str, Any] = resource["config"]
    while "config" in body and ("loop_type" in body or "condition" in body):
        body = body["config"]
    return body


def check_secrets(template: dict[str, Any]) -> Iterator[str]:
    for name, parameter in template.get("parameters", {}).items():
        if any(d.get("type") == "secure" for d in parameter.get("decorators", [])):
            yield f"parameter {name} is @secure(): secrets go into Key Vault after provisioning"
    for node in walk(template):
        if isinstance(node, str):
            if LIST_CALL_IN_STRING.search(node):
                yield f"a list*() call in {node!r} reads keys or secrets at deployment time"
            if KEY_IN_STRING.search(node):
                yield f"a key or SAS in {node!r}"
        if not isinstance(node, dict):
            continue
        # pycep's call and operator nodes are dicts; a resource property may be named so too
        # (a log alert's criteria have an `operator: 'GreaterThan'`).
        function = node.get("function") if isinstance(node.get("function"), dict) else {}
        operator = node.get("operator") if isinstance(node.get("operator"), dict) else {}
        called = function.get("parameters", {}).get("func_name") if function.get("type") == "list_func" else None
        called = called or operator.get("operands", {}).get("func_name")
        if isinstance(called, str) and called.startswith("list"):
            yield f"{called}() reads keys or secrets at deployment time"
        if set(node) == {"name", "value"} and isinstance(node["name"], str):
            yield from check_app_setting(node["name"], node["value"])


def check_app_setting(name: str, value: Any) -> Iterator[str]:
    if name in SECRET_SETTINGS:
        yield f"app setting {name} would hold a secret; the relay reads secrets from Key Vault"
    if name == "AzureWebJobsStorage__credential" and value != "managedidentity":
        yield "app setting AzureWebJobsStorage__credential must be 'managedidentity'"


def check_role_assignment(name: str, body: dict[str, Any]) -> Iterator[str]:
    function = body.get("name", {}).get("function", {}) if isinstance(body.get("name"), dict) else {}
    arguments = function.get("parameters", {})
    if function.get("type") != "guid" or len([a for a in arguments.values() if a is not None]) != 3:
        yield f"role assignment {name} must be named guid(scope, principal, role)"
        return
    scope = body.get("scope")
    first = arguments.get("base_string", {})
    first_target = first.get("operator", {}).get("operands", {}).get("operand_1") if isinstance(first, dict) else None
    if scope is not None and first_target != scope:
        yield f"role assignment {name} targets {scope} but its guid() starts with {first_target}"


def check_resources(template: dict[str, Any]) -> Iterator[str]:
    for name, resource in template.get("resources", {}).items():
        body = resource_body(resource)
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            yield from check_role_assignment(name, body)
        for key, expected in REQUIRED_PROPERTIES.get(resource["type"], {}).items():
            if not resource.get("existing") and body.get("properties", {}).get(key) is not expected:
                yield f"{resource['type']} {name}: properties.{key} must be {str(expected).lower()}"


def check_file(parser: BicepParser, path: Path) -> list[str]:
    """Return the findings for one file; a parse error is one finding."""
    try:
        template = parser.parse(file_path=path)
    except Exception as exc:  # lark raises several unrelated types; any of them is a syntax error
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [f"syntax error: {first_line}"]
    return [*check_secrets(template), *check_resources(template)]


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    files = sorted(root.rglob("*.bicep"))
    if not files:
        sys.stderr.write(f"check_bicep: no .bicep files under {root}\n")
        return 1
    parser = BicepParser()
    failed = False
    for path in files:
        findings = check_file(parser, path)
        for finding in findings:
            sys.stderr.write(f"{path}: {finding}\n")
        failed = failed or bool(findings)
    sys.stdout.write(f"check_bicep: {len(files)} file(s) parsed, {'FAILED' if failed else 'ok'}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

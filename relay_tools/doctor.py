"""``mlflow-relay doctor``: every check a deployment depends on, before the first event.

It reads the relay's settings from the environment (the Function App's settings, or
``local.settings.json``'s values exported locally) and checks, with the relay's own clients:
the settings, the rules file, a token for each resource the identity needs, each secret in
Key Vault, Azure DevOps for the organisation and project, every rule's pipeline, every
rule's parameters (a preview run, which starts nothing), the ledger table and the retry
queues. One line per check (✓ / ✗ / skipped; for a failure, what to do), then a summary;
``--json`` prints the same as data. Exit 0 when every check passed, 1 when any failed.
No secret value is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TextIO

from relay_tools.cli_errors import ExitCode, first_line
from relay_tools.doctor_checks import Check, CheckResult, DoctorContext, Status, failed
from relay_tools.doctor_checks.azure import check_identity, check_secrets
from relay_tools.doctor_checks.config import check_rules, check_settings
from relay_tools.doctor_checks.devops import check_parameters, check_pipelines, check_project
from relay_tools.doctor_checks.storage import check_ledger_table, check_retry_queues

CHECKS: tuple[Check, ...] = (
    check_settings,
    check_rules,
    check_identity,
    check_secrets,
    check_project,
    check_pipelines,
    check_parameters,
    check_ledger_table,
    check_retry_queues,
)
MARKS = {Status.PASSED: "✓", Status.FAILED: "✗", Status.SKIPPED: "-"}
ASCII_MARKS = {Status.PASSED: "ok", Status.FAILED: "FAIL", Status.SKIPPED: "-"}
REDACTED = "[redacted]"


def add_doctor_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    doctor = subparsers.add_parser(
        "doctor",
        help="check everything the deployment depends on; exit 1 if anything fails",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--json", action="store_true", help="print the checks and the summary as JSON")
    doctor.set_defaults(func=cmd_doctor)


def run_checks(environ: Mapping[str, str], checks: Sequence[Check] = CHECKS) -> tuple[list[CheckResult], set[str]]:
    """Every check in order, and the secret values met on the way (to keep out of the output)."""
    ctx = DoctorContext(environ)
    results: list[CheckResult] = []
    for check in checks:
        try:
            results.extend(check(ctx))
        except Exception as exc:  # a bug in a check must not hide the others' findings
            name = check.__name__.removeprefix("check_")
            results.append(
                failed(
                    name,
                    "the check ran",
                    f"internal error: {type(exc).__name__}: {first_line(str(exc))}",
                    "please report it (run with -v for the log)",
                )
            )
    return results, ctx.sensitive


def redact(text: str, sensitive: set[str]) -> str:
    """``text`` with every secret value in ``sensitive`` replaced (longest first)."""
    for value in sorted(sensitive, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def summary(results: Sequence[CheckResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {status.value: counts[status] for status in Status}


def render_text(results: Sequence[CheckResult], out: TextIO) -> None:
    marks = MARKS if _can_encode(out, "✓✗→") else ASCII_MARKS
    arrow = "→" if marks is MARKS else "->"
    for result in results:
        line = f"{marks[result.status]} {result.check}: {result.what}"
        if result.status is Status.SKIPPED:
            line += f": skipped, {result.detail}"
        elif result.detail:
            line += f": {result.detail}"
        if result.status is Status.FAILED and result.remedy:
            line += f" {arrow} {result.remedy}"
        out.write(line.replace("\n", " ") + "\n")
    counts = summary(results)
    verdict = "ready" if not counts["failed"] else "NOT ready: fix the failed checks above"
    out.write(f"doctor: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped: {verdict}\n")


def render_json(results: Sequence[CheckResult], out: TextIO) -> None:
    counts = summary(results)
    document = {"ok": counts["failed"] == 0, "summary": counts, "checks": [r.as_dict() for r in results]}
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _Redacting:
    """A text stream that replaces secret values before they reach ``out``."""

    def __init__(self, out: TextIO, sensitive: set[str]) -> None:
        self._out, self._sensitive = out, sensitive
        self.encoding = getattr(out, "encoding", "utf-8")

    def write(self, text: str) -> int:
        return self._out.write(redact(text, self._sensitive))


def cmd_doctor(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    results, sensitive = run_checks(os.environ if environ is None else environ)
    stream = _Redacting(out or sys.stdout, sensitive)
    (render_json if args.json else render_text)(results, stream)  # type: ignore[arg-type]
    return ExitCode.FAILED if any(r.status is Status.FAILED for r in results) else ExitCode.OK

"""The checks ``mlflow-relay doctor`` runs, and what they share.

Each check is a function of the ``DoctorContext`` that returns one ``CheckResult`` per thing
it checked (a setting, a secret, a pipeline, a rule); later checks read what earlier ones
found (the settings, the rules, whether Azure DevOps took the credentials) and are skipped,
with the reason, when what they need is missing. A check never raises for a failure of
the deployment: that is a failed result with the remedy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.secrets import RelaySecrets
    from relay.settings import Settings
    from relay_tools.doctor_checks.devops import DevOpsSession
    from webhook.rules import RouteRules

DEPLOY_GUIDE = "docs/deploy.md"


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: which check, what it checked, how it went, and what to do."""

    check: str
    what: str
    status: Status
    detail: str = ""
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "what": self.what,
            "status": self.status.value,
            "detail": self.detail,
            "remedy": self.remedy,
        }


def passed(check: str, what: str, detail: str = "") -> CheckResult:
    return CheckResult(check, what, Status.PASSED, detail)


def failed(check: str, what: str, detail: str, remedy: str) -> CheckResult:
    return CheckResult(check, what, Status.FAILED, detail, remedy)


def skipped(check: str, what: str, reason: str) -> CheckResult:
    return CheckResult(check, what, Status.SKIPPED, reason)


@dataclass
class DoctorContext:
    """The environment under test and what the checks found so far.

    ``sensitive`` collects every secret value the checks read (and the secret settings), so
    the report can prove it prints none of them.
    """

    environ: Mapping[str, str]
    settings: Settings | None = None
    rules: RouteRules | None = None
    secrets: RelaySecrets | None = None
    unreadable_secrets: set[str] = field(default_factory=set)  # roles: "webhook", "pat"
    devops: DevOpsSession | None = None
    devops_problem: str = ""  # why the DevOps checks after the first cannot run
    missing_pipelines: set[tuple[str, int]] = field(default_factory=set)
    sensitive: set[str] = field(default_factory=set)

    def remember_sensitive(self, *values: str | None) -> None:
        self.sensitive.update(v for v in values if v and len(v) >= 4)


Check = Callable[[DoctorContext], list[CheckResult]]

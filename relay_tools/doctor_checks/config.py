"""Doctor checks that need no network: the settings parse and are complete, the rules file loads."""

from __future__ import annotations

import re

from relay_tools.doctor_checks import DEPLOY_GUIDE, CheckResult, DoctorContext, failed, passed
from relay_tools.tool_context import routes_path

# Settings that hold secret values (local development) or a storage account key: never printed.
SENSITIVE_SETTINGS = ("WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET", "DEVOPS_PAT", "AzureWebJobsStorage")
_ACCOUNT_KEY = re.compile(r"AccountKey=([^;]+)", re.IGNORECASE)
# ``settings_from_env`` names every problem in one message, "setting X ...; setting Y ...".
_NEXT_PROBLEM = re.compile(r"; (?=setting )")
_PROBLEM = re.compile(r"^setting (?P<name>\S+) (?P<reason>.+)$", re.DOTALL)


def remember_sensitive_settings(ctx: DoctorContext) -> None:
    for name in SENSITIVE_SETTINGS:
        value = ctx.environ.get(name)
        ctx.remember_sensitive(value)
        if value:
            ctx.remember_sensitive(*_ACCOUNT_KEY.findall(value))


def check_settings(ctx: DoctorContext) -> list[CheckResult]:
    """Every problem in the settings, each on its own line; or what the settings choose."""
    from relay.settings import settings_from_env
    from webhook.errors import ConfigurationError

    remember_sensitive_settings(ctx)
    try:
        settings = settings_from_env(ctx.environ)
    except ConfigurationError as exc:
        return [_problem(text) for text in _NEXT_PROBLEM.split(exc.detail)]
    ctx.settings = settings
    secrets = "Key Vault" if settings.uses_key_vault else "the environment (local development only)"
    storage = "storage" if settings.uses_storage else "memory, no durable retry (local development only)"
    auth = settings.devops_auth + (
        " (Azure DevOps is retiring PATs: prefer managed-identity)" if settings.devops_auth == "pat" else ""
    )
    return [
        passed(
            "settings",
            "the settings parse and are complete",
            f"DEVOPS_AUTH={auth}; secrets from {secrets}; ledger and retry queue in {storage}",
        )
    ]


def _problem(text: str) -> CheckResult:
    match = _PROBLEM.match(text.strip())
    if match is None:  # e.g. the time budgets do not add up: the message says what to change
        return failed("settings", "the time budgets add up", text.strip(), "change what the message names")
    name = match["name"]
    remedy = (
        f"set {name} in the Function App's settings (through the template: azd env set ... && azd provision; "
        f"{DEPLOY_GUIDE}, step 2), or in local.settings.json / the environment locally"
    )
    return failed("settings", f"setting {name}", match["reason"], remedy)


def check_rules(ctx: DoctorContext) -> list[CheckResult]:
    """The rules file the relay would read loads, and names at least one rule."""
    from relay.composition import load_rules_file
    from webhook.errors import ConfigurationError

    path = ctx.settings.routes_file if ctx.settings else routes_path(ctx.environ)
    what = f"the rules file {path} loads"
    try:
        rules = load_rules_file(path)
    except ConfigurationError as exc:
        return [
            failed(
                "rules",
                what,
                exc.detail,
                "fix the rule and field it names (README, Routing rules); "
                "`mlflow-relay explain <payload>` checks a file offline",
            )
        ]
    if not rules.rules:
        return [
            failed(
                "rules",
                what,
                "it has no rules: no event will ever start a pipeline",
                "add a rule (README, Routing rules)",
            )
        ]
    ctx.rules = rules
    listed = ", ".join(f"{r.name} -> pipeline {r.pipeline_id}" for r in rules.rules)
    return [passed("rules", what, f"{len(rules.rules)} rule(s): {listed}")]

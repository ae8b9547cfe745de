"""infra/monitoring.bicep: the alerts watch log lines the relay really writes, and tell someone.

The Bicep itself is parsed and checked by ``.ci/check-infra``; this checks what it means: each
alert query names a decision the code logs, the action group's receiver is the deployment
parameter, and the template passes that parameter all the way from ``main.bicep``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
MONITORING = (INFRA / "monitoring.bicep").read_text()


def relay_source() -> str:
    return "\n".join(p.read_text() for p in (REPO_ROOT / "relay").glob("*.py"))


def test_every_alerted_decision_is_one_the_relay_logs():
    decisions = set(re.findall(r'relay decision=([a-z_]+)"', MONITORING))
    assert decisions == {"poisoned", "catch_up_failed"}
    source = relay_source()
    for decision in decisions:
        assert f'"{decision}"' in source, f"the alert watches decision={decision}, which nothing logs"


def test_sustained_5xx_means_three_failing_windows_in_a_row_on_the_webhook():
    assert "toint(resultCode) >= 500" in MONITORING and 'name == "${webhookFunctionName}"' in MONITORING
    block = MONITORING[MONITORING.index("name: 'sustained-5xx'") :]
    assert re.search(r"periods: 3", block[:800])
    assert "numberOfEvaluationPeriods: alert.periods" in MONITORING
    assert "minFailingPeriodsToAlert: alert.periods" in MONITORING


def test_the_action_group_mails_the_parameter_and_every_rule_uses_it():
    assert re.search(r"emailReceivers: \[\s*\{[^}]*emailAddress: alertEmailAddress", MONITORING)
    assert "actionGroups: [\n        actionGroup.id" in MONITORING
    resources = (INFRA / "resources.bicep").read_text()
    main = (INFRA / "main.bicep").read_text()
    assert "alertEmailAddress: alertEmailAddress" in resources and "alertEmailAddress: alertEmailAddress" in main
    assert re.search(r"^param alertEmailAddress string$", main, re.MULTILINE), "required: someone must be told"


def test_the_workbook_shows_decisions_failures_and_latency():
    for title in ("Deliveries over time, by decision", "Failures by reason", "Answer latency"):
        assert f"title: '{title}" in MONITORING
    assert "percentile(duration, 95)" in MONITORING and "sourceId: appInsights.id" in MONITORING


def test_the_catch_up_schedule_is_always_set_because_the_timer_binding_reads_it():
    resources = (INFRA / "resources.bicep").read_text()
    assert re.search(r"name: 'CATCH_UP_SCHEDULE'\s*\n\s*value: catchUpSchedule", resources)
    assert "param catchUpSchedule string = '0 */15 * * * *'" in resources
    function_app = (REPO_ROOT / "function_app.py").read_text()
    assert 'schedule="%CATCH_UP_SCHEDULE%"' in function_app

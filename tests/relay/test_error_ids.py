"""Configuration detail goes to operators, not to callers: through the registered function, a
misconfigured relay answers 500 with a generic reason and an ``error_id``, and the decision log
line with the same id names the setting or secret; an unsigned request is answered 401 without
any configuration at all."""

from __future__ import annotations

import logging
import re

import pytest
import respx

GENERIC = "the relay is misconfigured; an operator can find the cause by its error_id"


@pytest.fixture
def devops():
    with respx.mock(assert_all_called=False) as mock:  # any request to Azure DevOps fails the test
        yield mock


def misconfigured_line(caplog: pytest.LogCaptureFixture, error_id: str) -> str:
    lines = [r.getMessage() for r in caplog.records if "decision=misconfigured" in r.getMessage()]
    (line,) = [text for text in lines if f"error_id={error_id}" in text]
    return line


class TestMisconfiguredAnswersCarryAnErrorId:
    @pytest.mark.parametrize(
        ("break_it", "named"),
        [
            (lambda env: env.delenv("DEVOPS_PROJECT"), "DEVOPS_PROJECT"),
            (lambda env: env.setenv("DEVOPS_ORG_URL", "http://plain.example"), "DEVOPS_ORG_URL"),
            (lambda env: env.delenv("WEBHOOK_SECRET"), "WEBHOOK_SECRET"),
            (lambda env: env.setenv("ROUTES_FILE", "/nonexistent/routes.yaml"), "ROUTES_FILE"),
        ],
        ids=["missing setting", "invalid setting", "missing secret", "missing rules file"],
    )
    def test_the_caller_gets_a_generic_500_and_the_log_line_names_the_cause(
        self, relay_env, call_webhook, deliveries, devops, caplog, break_it, named
    ):
        caplog.set_level(logging.INFO, logger="relay")
        break_it(relay_env)
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        answer = deliveries.answer(response)
        assert response.status_code == 500
        assert answer["status"] == "error" and answer["error"] == "ConfigurationError"
        assert answer["detail"] == GENERIC
        assert re.fullmatch(r"[0-9a-f]{12}", answer["error_id"])
        text = response.get_body().decode()
        assert named not in text and "Traceback" not in text
        line = misconfigured_line(caplog, answer["error_id"])
        assert named in line
        assert [r.levelno for r in caplog.records if "decision=misconfigured" in r.getMessage()] == [logging.ERROR]
        assert not devops.calls

    def test_each_answer_has_its_own_error_id(self, relay_env, call_webhook, deliveries, devops, caplog):
        relay_env.delenv("DEVOPS_PROJECT")
        body = deliveries.databricks_body()
        ids = {deliveries.answer(call_webhook(body, deliveries.databricks_headers(body)))["error_id"] for _ in range(3)}
        assert len(ids) == 3


class TestUnsignedNeedsNoConfiguration:
    def test_unsigned_request_to_an_unconfigured_relay_is_401(self, clean_env, call_webhook, deliveries, caplog):
        caplog.set_level(logging.INFO, logger="relay")
        response = call_webhook(deliveries.databricks_body(), {"Content-Type": "application/json"})
        answer = deliveries.answer(response)
        assert response.status_code == 401 and answer["error"] == "AuthenticationFailed"
        assert "unsigned" in answer["detail"] and "error_id" not in answer
        assert not [r for r in caplog.records if "misconfigured" in r.getMessage()]

    def test_mis_signed_request_is_401_and_reaches_nothing(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body, secret="not-the-secret"))
        assert response.status_code == 401 and deliveries.answer(response)["error"] == "AuthenticationFailed"
        assert not devops.calls

    def test_mis_signed_request_needs_only_the_secret(self, relay_env, call_webhook, deliveries, devops):
        relay_env.delenv("DEVOPS_PROJECT")  # not needed to verify a signature
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body, secret="not-the-secret"))
        assert response.status_code == 401

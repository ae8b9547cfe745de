"""The relay end to end through the registered Azure Function, with Azure DevOps mocked by respx.

Each test builds the relay afresh from the environment (``relay_env`` resets it before and after).
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
import respx

PIPELINE_13 = "https://dev.azure.com/contoso/MLOps/_apis/pipelines/13/runs"
PIPELINE_14 = "https://dev.azure.com/contoso/MLOps/_apis/pipelines/14/runs"


def started(run_id):
    return httpx.Response(200, json={"id": run_id, "_links": {"web": {"href": f"https://dev.azure.com/r/{run_id}"}}})


@pytest.fixture
def devops():
    with respx.mock(assert_all_called=False) as mock:  # an unmocked request fails the test
        yield mock


@pytest.fixture
def production(devops):
    return devops.post(PIPELINE_13, params={"api-version": "7.1"}).mock(return_value=started(4711))


class TestAnswers:
    def test_triggered_answers_200_with_the_runs(self, relay_env, call_webhook, deliveries, production):
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        answer = deliveries.answer(response)
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert answer["status"] == "triggered"
        assert answer["runs"] == [
            {"rule": "production", "pipeline_id": 13, "run_id": 4711, "url": "https://dev.azure.com/r/4711"}
        ]
        assert (answer["model"], answer["version"]) == ("wine-quality", "3")
        sent = json.loads(production.calls.last.request.content)
        assert sent["templateParameters"]["model_version"] == "3"
        assert sent["templateParameters"]["delivery_id"] == answer["delivery_id"]

    def test_mlflow_alias_fans_out_to_two_pipelines(self, relay_env, call_webhook, deliveries, production, devops):
        audit = devops.post(PIPELINE_14).mock(return_value=started(99))
        body = deliveries.mlflow_body()
        answer = deliveries.answer(call_webhook(body, deliveries.mlflow_headers(body)))
        assert answer["status"] == "triggered"
        assert sorted((r["rule"], r["pipeline_id"], r["run_id"]) for r in answer["runs"]) == [
            ("champion-audit", 14, 99),
            ("champion-deploy", 13, 4711),
        ]
        sent = json.loads(audit.calls.last.request.content)
        assert sent == {
            "templateParameters": {"model": "wine-quality", "version": "3"},
            "resources": {"repositories": {"self": {"refName": "refs/heads/main"}}},
        }

    def test_unmatched_event_is_ignored(self, relay_env, call_webhook, deliveries, production):
        body = deliveries.databricks_body(to_stage="Archived", from_stage="Production")
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 200
        assert deliveries.answer(response)["status"] == "ignored"
        assert not production.called

    def test_prompt_event_is_ignored_not_rejected(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.mlflow_body("prompt_version", "created", name="qa-prompt", version="2", template="Hi")
        response = call_webhook(body, deliveries.mlflow_headers(body))
        assert response.status_code == 200
        assert deliveries.answer(response)["status"] == "ignored"
        assert not devops.calls

    def test_mlflow_test_delivery_is_ignored(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.mlflow_body(name="example_model", alias="champion", version="1")
        answer = deliveries.answer(call_webhook(body, deliveries.mlflow_headers(body)))
        assert answer["status"] == "ignored" and "example_model" in answer["detail"]
        assert not devops.calls

    def test_repeated_delivery_answers_duplicate(self, relay_env, call_webhook, deliveries, production):
        body = deliveries.databricks_body()
        headers = deliveries.databricks_headers(body)
        first = deliveries.answer(call_webhook(body, headers))
        response = call_webhook(body, headers)
        answer = deliveries.answer(response)
        assert response.status_code == 200 and answer["status"] == "duplicate"
        assert answer["runs"] == first["runs"]
        assert production.call_count == 1

    def test_generic_and_specific_webhooks_of_one_change_start_one_run(
        self, relay_env, call_webhook, deliveries, production
    ):
        stamp = int(time.time() * 1000)
        generic = deliveries.databricks_body(event_timestamp=stamp)
        specific = deliveries.databricks_body(
            event="MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", webhook_id="other", event_timestamp=stamp
        )
        call_webhook(generic, deliveries.databricks_headers(generic))
        answer = deliveries.answer(call_webhook(specific, deliveries.databricks_headers(specific)))
        assert answer["status"] == "duplicate"
        assert production.call_count == 1

    @pytest.mark.parametrize("body", [b"{not json", b"[]", '{"x": "\xe9"}'.encode("latin-1")])
    def test_malformed_body_answers_400(self, relay_env, call_webhook, deliveries, devops, body):
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 400
        assert deliveries.answer(response)["error"] == "PayloadInvalid"
        assert not devops.calls

    def test_schema_error_answers_400_naming_the_field(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body(model_name=None)
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 400
        assert "'model_name'" in deliveries.answer(response)["detail"]

    def test_unknown_databricks_event_answers_400_naming_the_field(self, relay_env, call_webhook, deliveries):
        body = deliveries.databricks_body(event="MODEL_VERSION_DELETED")
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 400 and "'event'" in deliveries.answer(response)["detail"]


class TestAuthenticationFailures:
    """401 for anything not signed right; nothing reaches Azure DevOps."""

    def test_missing_signature(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body()
        response = call_webhook(body, {"Content-Type": "application/json"})
        assert response.status_code == 401 and "unsigned" in deliveries.answer(response)["detail"]
        assert not devops.calls

    def test_wrong_signature(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body, secret="forged"))
        assert response.status_code == 401
        assert deliveries.answer(response)["error"] == "AuthenticationFailed"
        assert not devops.calls

    def test_wrong_mlflow_signature(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.mlflow_body()
        response = call_webhook(body, deliveries.mlflow_headers(body, secret="forged"))
        assert response.status_code == 401
        assert not devops.calls

    def test_stale_mlflow_delivery(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.mlflow_body()
        response = call_webhook(body, deliveries.mlflow_headers(body, timestamp=int(time.time()) - 3600))
        assert response.status_code == 401 and "stale" in deliveries.answer(response)["detail"]
        assert not devops.calls

    def test_future_mlflow_delivery(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.mlflow_body()
        response = call_webhook(body, deliveries.mlflow_headers(body, timestamp=int(time.time()) + 3600))
        assert response.status_code == 401 and "future" in deliveries.answer(response)["detail"]
        assert not devops.calls

    def test_stale_databricks_delivery(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body(event_timestamp=int((time.time() - 3600) * 1000))
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 401 and "stale" in deliveries.answer(response)["detail"]
        assert not devops.calls

    def test_recorded_mlflow_delivery_replayed_now_is_stale(
        self, relay_env, call_webhook, recorded_deliveries, deliveries, devops
    ):
        sample = recorded_deliveries["model_version_alias.created"]
        relay_env.setenv("WEBHOOK_SECRET", sample.secret)
        # However recently the samples were recorded, a replay now is older than this window.
        age = time.time() - sample.timestamp
        relay_env.setenv("WEBHOOK_MAX_AGE_SECONDS", str(max(1.0, age / 2)))
        response = call_webhook(sample.body, sample.headers)
        assert response.status_code == 401
        assert "s ago" in deliveries.answer(response)["detail"]  # refused as a replay, not for its signature
        assert not devops.calls


class TestHttpErrors:
    def test_get_answers_405_with_allow_post(self, relay_env, call_webhook, deliveries):
        response = call_webhook(b"", {}, method="GET")
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
        assert deliveries.answer(response)["error"] == "MethodNotAllowed"

    def test_body_over_64_kib_answers_413(self, relay_env, call_webhook, deliveries, devops):
        body = deliveries.databricks_body(text="x" * 64 * 1024)
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 413
        assert not devops.calls

    def test_devops_refusal_answers_424_with_its_message(self, relay_env, call_webhook, deliveries, devops):
        devops.post(PIPELINE_13).mock(
            return_value=httpx.Response(
                400, json={"message": "Unexpected parameter 'model_version'", "typeKey": "PipelineValidationException"}
            )
        )
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert response.status_code == 424  # Failed Dependency: neither MLflow nor Databricks retries it
        assert "Unexpected parameter 'model_version'" in deliveries.answer(response)["detail"]

    def test_devops_outage_answers_503_with_retry_after(self, relay_env, call_webhook, deliveries, devops):
        relay_env.setenv("DEVOPS_DEADLINE_SECONDS", "0.3")
        route = devops.post(PIPELINE_13).mock(return_value=httpx.Response(503))
        body = deliveries.databricks_body()
        began = time.monotonic()
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert time.monotonic() - began < 5
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert deliveries.answer(response)["status"] == "unavailable"
        assert route.call_count >= 1

    def test_missing_setting_answers_a_generic_500_and_the_log_names_it(
        self, relay_env, call_webhook, deliveries, caplog
    ):
        relay_env.delenv("DEVOPS_PROJECT")
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        text = response.get_body().decode()
        assert "Traceback" not in text and 'File "' not in text
        assert_misconfigured(response, deliveries, caplog, "DEVOPS_PROJECT")

    def test_unsigned_request_answers_401_even_when_misconfigured(self, relay_env, call_webhook, deliveries):
        relay_env.delenv("DEVOPS_PROJECT")
        relay_env.delenv("WEBHOOK_SECRET")
        response = call_webhook(deliveries.databricks_body(), {})
        assert response.status_code == 401 and deliveries.answer(response)["status"] == "rejected"

    def test_missing_webhook_secret_answers_500_and_the_log_names_it(self, relay_env, call_webhook, deliveries, caplog):
        relay_env.delenv("WEBHOOK_SECRET")
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert_misconfigured(response, deliveries, caplog, "WEBHOOK_SECRET")

    def test_missing_pat_answers_500_and_the_log_names_it(
        self, relay_env, call_webhook, deliveries, production, caplog
    ):
        relay_env.delenv("DEVOPS_PAT")
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert_misconfigured(response, deliveries, caplog, "DEVOPS_PAT")
        assert not production.called

    def test_invalid_rules_file_answers_500_and_the_log_names_rule_and_field(
        self, relay_env, call_webhook, deliveries, rules_file, caplog
    ):
        rules_file.write_text("rules:\n  - name: prod\n    pipeline_id: 13\n    when: {stage: Production}\n")
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        line = assert_misconfigured(response, deliveries, caplog, "rule 'prod'")
        assert "when.stage" in line

    def test_missing_rules_file_answers_500_and_the_log_names_routes_file(
        self, relay_env, call_webhook, deliveries, tmp_path, caplog
    ):
        relay_env.setenv("ROUTES_FILE", str(tmp_path / "absent.yaml"))
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        assert_misconfigured(response, deliveries, caplog, "ROUTES_FILE")


def assert_misconfigured(response, deliveries, caplog, needle: str) -> str:
    """A 500 that tells the caller nothing but an error id; the log line with that id names the cause."""
    answer = deliveries.answer(response)
    assert response.status_code == 500 and answer["error"] == "ConfigurationError"
    assert needle not in answer["detail"] and answer["error_id"]
    lines = [r.getMessage() for r in caplog.records if f"error_id={answer['error_id']}" in r.getMessage()]
    assert len(lines) == 1 and needle in lines[0] and "decision=misconfigured" in lines[0]
    return lines[0]


class TestDryRun:
    def test_dry_run_answers_the_plan_without_calling_devops(self, relay_env, call_webhook, deliveries, devops):
        relay_env.setenv("RELAY_DRY_RUN", "true")
        body = deliveries.databricks_body()
        response = call_webhook(body, deliveries.databricks_headers(body))
        answer = deliveries.answer(response)
        assert response.status_code == 200 and answer["status"] == "dry-run"
        assert answer["runs"][0]["rule"] == "production" and answer["runs"][0]["pipeline_id"] == 13
        assert answer["runs"][0]["parameters"]["model_version"] == "3"
        assert not devops.calls


class TestSecretsStaySecret:
    def test_secret_and_pat_never_in_answers_or_logs(self, relay_env, call_webhook, deliveries, devops, caplog):
        caplog.set_level(logging.DEBUG)
        devops.post(PIPELINE_13).mock(
            side_effect=[
                started(1),
                httpx.Response(401),
                httpx.Response(203, text="<html>sign in</html>", headers={"Content-Type": "text/html"}),
            ]
        )
        answers = []
        for to_stage in ("Production", "Production", "Archived"):
            body = deliveries.databricks_body(to_stage=to_stage, version=str(len(answers)))
            answers.append(call_webhook(body, deliveries.databricks_headers(body)))
        body = deliveries.databricks_body()
        answers.append(call_webhook(body, deliveries.databricks_headers(body, secret="forged")))
        answers.append(call_webhook(body, {"X-Databricks-Signature": "zz"}))
        relay_env.delenv("DEVOPS_PROJECT")
        answers.append(call_webhook(body, deliveries.databricks_headers(body)))
        assert [a.status_code for a in answers] == [200, 424, 200, 401, 401, 500]
        texts = [a.get_body().decode() for a in answers]
        texts += [r.getMessage() for r in caplog.records] + [str(r.__dict__) for r in caplog.records]
        assert caplog.records
        for text in texts:
            assert deliveries.secret not in text
            assert deliveries.pat not in text


class TestRotation:
    def test_delivery_signed_with_a_rotated_secret_is_accepted(self, relay_env, call_webhook, deliveries, production):
        body = deliveries.databricks_body()
        assert call_webhook(body, deliveries.databricks_headers(body)).status_code == 200  # caches the old secret
        relay_env.setenv("WEBHOOK_SECRET", "rotated-secret-2")
        relay_env.setenv("WEBHOOK_PREVIOUS_SECRET", deliveries.secret)
        body = deliveries.databricks_body(version="4")
        response = call_webhook(body, deliveries.databricks_headers(body, secret="rotated-secret-2"))
        assert response.status_code == 200 and deliveries.answer(response)["status"] == "triggered"
        old = deliveries.databricks_body(version="5")
        assert call_webhook(old, deliveries.databricks_headers(old)).status_code == 200  # previous still accepted

    def test_old_secret_is_refused_once_rotated_out(self, relay_env, call_webhook, deliveries, production):
        relay_env.setenv("WEBHOOK_SECRET", "rotated-secret-2")
        body = deliveries.databricks_body()
        assert call_webhook(body, deliveries.databricks_headers(body)).status_code == 401
        assert not production.called

"""``mlflow-relay``: sign, explain and demo, run in-process."""

from __future__ import annotations

import json

import pytest

from devops.client import AzureDevOpsClient, run_request_body
from relay_tools.cli import main
from webhook.routing import PipelineRunRequest
from webhook.signatures import verify_databricks_signature, verify_mlflow_signature


def headers_from(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.strip().splitlines())


@pytest.fixture
def payload(tmp_path, deliveries):
    def write(body: bytes):
        path = tmp_path / "payload.json"
        path.write_bytes(body)
        return path

    return write


class TestSign:
    def test_databricks_signature_verifies(self, clean_env, payload, deliveries, capsys):
        clean_env.setenv("WEBHOOK_SECRET", deliveries.secret)
        body = '{"event": "MODEL_VERSION_CREATED",  "text": "🚀"}'.encode()
        assert main(["sign", str(payload(body)), "--format", "databricks"]) == 0
        out = capsys.readouterr().out
        verify_databricks_signature(body, signature=headers_from(out)["X-Databricks-Signature"],
                                    secrets=[deliveries.secret])  # fmt: skip
        assert deliveries.secret not in out

    def test_mlflow_signature_verifies(self, clean_env, payload, deliveries, capsys):
        clean_env.setenv("WEBHOOK_SECRET", deliveries.secret)
        body = deliveries.mlflow_body()
        assert main(["sign", str(payload(body)), "--delivery-id", "d-9", "--timestamp", "1700000000"]) == 0
        headers = headers_from(capsys.readouterr().out)
        assert headers["X-MLflow-Delivery-Id"] == "d-9" and headers["X-MLflow-Timestamp"] == "1700000000"
        verify_mlflow_signature(body, delivery_id="d-9", timestamp="1700000000",
                                signature=headers["X-MLflow-Signature"], secrets=[deliveries.secret],
                                now=1700000001, max_age=60)  # fmt: skip

    def test_format_is_detected_from_the_body(self, clean_env, payload, deliveries, capsys):
        clean_env.setenv("WEBHOOK_SECRET", deliveries.secret)
        main(["sign", str(payload(deliveries.databricks_body()))])
        assert "X-Databricks-Signature" in capsys.readouterr().out
        main(["sign", str(payload(deliveries.mlflow_body()))])
        assert "X-MLflow-Signature" in capsys.readouterr().out

    def test_missing_secret_exits_with_a_reason(self, clean_env, payload, deliveries, capsys):
        assert main(["sign", str(payload(deliveries.databricks_body()))]) == 2
        assert "WEBHOOK_SECRET" in capsys.readouterr().err


class TestExplain:
    def test_prints_matched_rules_and_the_exact_requests(self, clean_env, payload, deliveries, rules_file, capsys):
        clean_env.setenv("DEVOPS_ORG_URL", "https://dev.azure.com/contoso/")
        body = deliveries.mlflow_body()
        code = main(["explain", str(payload(body)), "--rules", str(rules_file), "--project", "ML Ops",
                     "--delivery-id", "d-7"])  # fmt: skip
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        assert report["matched_rules"] == ["champion-deploy", "champion-audit"]
        assert report["event"]["delivery_id"] == "d-7"
        deploy, audit = report["runs"]
        request = PipelineRunRequest(rule="champion-audit", project="ML Ops", pipeline_id=14, branch="refs/heads/main",
                                     template_parameters={"model": "wine-quality", "version": "3"},
                                     delivery_id="d-7", model_name="wine-quality", version="3")  # fmt: skip
        client = AzureDevOpsClient(org_url="https://dev.azure.com/contoso", auth=None, http=None)
        assert audit["method"] == "POST"
        assert audit["url"] == client.runs_url(request)  # the URL the relay would really call
        assert audit["body"] == run_request_body(request)
        assert deploy["body"]["templateParameters"]["delivery_id"] == "d-7"

    def test_unmatched_payload_lists_no_rules(self, clean_env, payload, deliveries, rules_file, capsys):
        body = deliveries.databricks_body(to_stage="Archived")
        assert main(["explain", str(payload(body)), "--rules", str(rules_file)]) == 0
        assert json.loads(capsys.readouterr().out)["matched_rules"] == []

    def test_invalid_payload_exits_2_with_a_reason(self, clean_env, payload, rules_file, capsys):
        assert main(["explain", str(payload(b"{}")), "--rules", str(rules_file)]) == 2
        assert "invalid payload" in capsys.readouterr().err


class TestDemo:
    def test_demo_exits_zero(self, clean_env, capsys):
        for name in ("WEBHOOK_SECRET", "DEVOPS_ORG_URL", "DEVOPS_PROJECT", "DEVOPS_PAT", "RELAY_DRY_RUN"):
            clean_env.setenv(name, "placeholder")  # restored after the test: the demo sets them
        assert main(["demo"]) == 0
        out = capsys.readouterr().out
        assert "every answer as expected" in out
        assert "HTTP 401" in out and "dry-run" in out

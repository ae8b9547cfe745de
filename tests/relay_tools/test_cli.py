"""``mlflow-relay``: sign, explain and demo, run in-process."""

from __future__ import annotations

import json
import shlex
import subprocess

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
        verify_databricks_signature(
            body, signature=headers_from(out)["X-Databricks-Signature"], secrets=[deliveries.secret]
        )
        assert deliveries.secret not in out

    def test_mlflow_signature_verifies(self, clean_env, payload, deliveries, capsys):
        clean_env.setenv("WEBHOOK_SECRET", deliveries.secret)
        body = deliveries.mlflow_body()
        assert main(["sign", str(payload(body)), "--delivery-id", "d-9", "--timestamp", "1700000000"]) == 0
        headers = headers_from(capsys.readouterr().out)
        assert headers["X-MLflow-Delivery-Id"] == "d-9" and headers["X-MLflow-Timestamp"] == "1700000000"
        verify_mlflow_signature(
            body,
            delivery_id="d-9",
            timestamp="1700000000",
            signature=headers["X-MLflow-Signature"],
            secrets=[deliveries.secret],
            now=1700000001,
            max_age=60,
        )

    def test_format_is_detected_from_the_body(self, clean_env, payload, deliveries, capsys):
        clean_env.setenv("WEBHOOK_SECRET", deliveries.secret)
        main(["sign", str(payload(deliveries.databricks_body()))])
        assert "X-Databricks-Signature" in capsys.readouterr().out
        main(["sign", str(payload(deliveries.mlflow_body()))])
        assert "X-MLflow-Signature" in capsys.readouterr().out

    def test_missing_secret_exits_3_with_one_line_naming_it(self, clean_env, payload, deliveries, capsys):
        assert main(["sign", str(payload(deliveries.databricks_body()))]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "WEBHOOK_SECRET" in err and err.startswith("mlflow-relay sign: ")


class TestSignCurl:
    """``sign --curl`` prints a command that really posts the signed payload (run with the real curl)."""

    @pytest.fixture
    def local_relay(self, relay_env):
        from function_app import app
        from relay_tools.local_host import LocalFunctionsHost

        relay_env.setenv("RELAY_DRY_RUN", "true")
        server = LocalFunctionsHost(app, "127.0.0.1", 0)
        server.start_in_thread()
        yield f"{server.base_url}/api/MLflowWebHookTransition"
        server.shutdown()
        server.server_close()

    @pytest.mark.parametrize("fmt", ["databricks", "mlflow"])
    def test_the_printed_command_posts_a_delivery_the_relay_accepts(
        self, local_relay, payload, deliveries, capsys, fmt
    ):
        body = deliveries.databricks_body() if fmt == "databricks" else deliveries.mlflow_body()
        path = payload(body)
        assert main(["sign", str(path), "--curl", "--url", local_relay]) == 0
        command = capsys.readouterr().out
        assert command.count("\n") == 1 and shlex.split(command)[0] == "curl"
        assert deliveries.secret not in command
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=True)
        status_line, _, rest = result.stdout.partition("\n")
        assert " 200" in status_line, result.stdout
        assert json.loads(rest[rest.index("{") :])["status"] == "dry-run"

    def test_a_path_with_spaces_is_quoted(self, relay_env, tmp_path, deliveries, capsys):
        path = tmp_path / "my payload.json"
        path.write_bytes(deliveries.mlflow_body())
        main(["sign", str(path), "--curl"])
        words = shlex.split(capsys.readouterr().out)
        assert words[-2:] == ["--data-binary", f"@{path}"]
        assert "http://127.0.0.1:7071/api/MLflowWebHookTransition" in words


class TestExplain:
    def test_prints_matched_rules_and_the_exact_requests(self, clean_env, payload, deliveries, rules_file, capsys):
        clean_env.setenv("DEVOPS_ORG_URL", "https://dev.azure.com/contoso/")
        body = deliveries.mlflow_body()
        code = main(
            ["explain", str(payload(body)), "--rules", str(rules_file), "--project", "ML Ops", "--delivery-id", "d-7"]
        )
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        assert report["matched_rules"] == ["champion-deploy", "champion-audit"]
        assert report["event"]["delivery_id"] == "d-7"
        deploy, audit = report["runs"]
        request = PipelineRunRequest(
            rule="champion-audit",
            project="ML Ops",
            pipeline_id=14,
            branch="refs/heads/main",
            template_parameters={"model": "wine-quality", "version": "3"},
            delivery_id="d-7",
            model_name="wine-quality",
            version="3",
        )
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


class TestExplainPreview:
    """``explain --preview`` asks Azure DevOps (the TLS stand-in) for a preview run of each request."""

    @pytest.fixture
    def standin(self, relay_env, tmp_path, deliveries):
        from standins.devops import DevOpsStandIn

        standin = DevOpsStandIn(tmp_path / "devops", pat=deliveries.pat).start()
        relay_env.setenv("DEVOPS_ORG_URL", standin.org_url)
        relay_env.setenv("DEVOPS_CA_BUNDLE", str(standin.tls.ca_file))
        yield standin
        standin.stop()

    def test_shows_each_pipeline_s_answer_and_starts_nothing(self, standin, payload, deliveries, capsys):
        code = main(["explain", str(payload(deliveries.mlflow_body())), "--preview"])
        report = json.loads(capsys.readouterr().out)
        deploy, audit = report["runs"]
        assert code == 1  # champion-audit's parameters are not declared by its pipeline
        assert deploy["preview"]["status"] == "accepted" and "model_name" in deploy["preview"]["final_yaml"]
        assert audit["preview"] == {"status": "refused", "detail": audit["preview"]["detail"]}
        assert "Unexpected parameter 'model'" in audit["preview"]["detail"]
        posted = [json.loads(r["body"]) for r in standin.requests if r["method"] == "POST"]
        assert [body.get("previewRun") for body in posted] == [True, True]
        assert standin.runs == [] and [p["pipeline_id"] for p in standin.previews] == [13]  # the accepted one

    def test_exits_zero_when_every_pipeline_accepts(self, standin, payload, deliveries, capsys):
        standin.declared_parameters[14] = frozenset({"model", "version"})
        assert main(["explain", str(payload(deliveries.mlflow_body())), "--preview"]) == 0
        assert all(r["preview"]["status"] == "accepted" for r in json.loads(capsys.readouterr().out)["runs"])

    def test_needs_the_relay_s_settings(self, clean_env, payload, deliveries, capsys):
        assert main(["explain", str(payload(deliveries.mlflow_body())), "--preview"]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "DEVOPS_ORG_URL" in err

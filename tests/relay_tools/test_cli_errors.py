"""``mlflow-relay`` as a new user meets it: every error is one line on stderr with an exit code
that says what happened, never a traceback; ``-v`` goes anywhere; every option has help."""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import relay.composition
from relay_tools import explain
from relay_tools.cli import build_parser, main
from relay_tools.cli_errors import ExitCode


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StaticCredential:
    """A token credential that never leaves the machine."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("static-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("static-test-token", int(time.time()) + 3600)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_one_line(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and 'File "' not in err
    for word in words:
        assert word in err, err


@pytest.fixture
def no_databricks_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Databricks host, token, profile or config file: the SDK's default auth finds nothing."""
    import os

    for name in [n for n in os.environ if n.startswith(("DATABRICKS_", "ARM_"))]:
        clean_env.delenv(name)
    clean_env.setenv("HOME", str(tmp_path))
    clean_env.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "absent.cfg"))
    return clean_env


@pytest.fixture
def bounded_mlflow(clean_env: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """MLflow's HTTP knobs as the user left them (unset); whatever the command sets is undone."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        clean_env.delenv(name, raising=False)
    yield clean_env


class TestOneLineErrors:
    def test_an_unknown_command_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, err = run(["deploy"], capsys)
        assert code == ExitCode.USAGE
        assert_one_line(err, "invalid choice: 'deploy'", "--help")

    def test_a_missing_argument_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, err = run(["webhooks", "create", "--platform", "mlflow"], capsys)
        assert code == ExitCode.USAGE
        assert_one_line(err, "--url")

    def test_an_unreadable_payload_is_a_usage_error(self, clean_env: Any, tmp_path: Path, capsys: Any) -> None:
        code, err = run(["explain", str(tmp_path / "absent.json")], capsys)
        assert code == ExitCode.USAGE
        assert_one_line(err, "mlflow-relay explain: cannot read", "absent.json")

    def test_a_broken_rules_file_is_a_configuration_error(
        self, clean_env: Any, tmp_path: Path, deliveries: Any, capsys: Any
    ) -> None:
        payload, rules = tmp_path / "p.json", tmp_path / "routes.yaml"
        payload.write_bytes(deliveries.mlflow_body())
        rules.write_text("rules:\n  - name: prod\n    pipeline_id: 0\n", encoding="utf-8")
        code, err = run(["explain", str(payload), "--rules", str(rules)], capsys)
        assert code == ExitCode.CONFIGURATION
        assert_one_line(err, "rule 'prod'", "pipeline_id")

    def test_an_unreachable_key_vault_is_unavailable(
        self, clean_env: pytest.MonkeyPatch, tmp_path: Path, deliveries: Any, capsys: Any
    ) -> None:
        clean_env.setattr(relay.composition, "azure_credential", lambda client_id: StaticCredential())
        clean_env.setenv("KEY_VAULT_URL", f"https://127.0.0.1:{closed_port()}")
        payload = tmp_path / "p.json"
        payload.write_bytes(deliveries.mlflow_body())
        code, err = run(["sign", str(payload)], capsys)
        assert code == ExitCode.UNAVAILABLE
        assert_one_line(err, "Key Vault unreachable")

    def test_a_bug_is_an_internal_error_in_one_line(self, clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
        def broken(args: argparse.Namespace) -> int:
            raise TypeError("unsupported operand")

        clean_env.setattr(explain, "cmd_explain", broken)
        code, err = run(["explain", "x.json"], capsys)
        assert code == ExitCode.INTERNAL == 70
        assert_one_line(err, "internal error (TypeError: unsupported operand); please report it")

    def test_ctrl_c_is_130(self, clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
        def interrupted(args: argparse.Namespace) -> int:
            raise KeyboardInterrupt

        clean_env.setattr(explain, "cmd_explain", interrupted)
        code, err = run(["explain", "x.json"], capsys)
        assert code == ExitCode.INTERRUPTED
        assert_one_line(err, "interrupted")


class TestWebhooksErrors:
    """What a new user tried: no extra, no Databricks sign-in, no or an unreachable tracking URI."""

    @pytest.mark.parametrize("platform", ["databricks", "mlflow"])
    def test_without_the_databricks_extra_says_what_to_install(
        self, bounded_mlflow: pytest.MonkeyPatch, capsys: Any, platform: str
    ) -> None:
        bounded_mlflow.setitem(sys.modules, "databricks.sdk", None)  # what an absent package looks like
        bounded_mlflow.setitem(sys.modules, "mlflow", None)
        code, err = run(["webhooks", "list", "--platform", platform, "--tracking-uri", "http://127.0.0.1:1"], capsys)
        assert code == ExitCode.CONFIGURATION
        assert_one_line(err, "pip install -e '.[databricks]'")

    def test_without_databricks_sign_in_says_what_to_configure(
        self, no_databricks_config: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        code, err = run(["webhooks", "list", "--platform", "databricks"], capsys)
        assert code == ExitCode.CONFIGURATION
        assert_one_line(err, "mlflow-relay webhooks list: Databricks sign-in is not configured", "DATABRICKS_HOST")

    def test_without_a_tracking_uri_refuses_and_creates_nothing(
        self, bounded_mlflow: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
    ) -> None:
        bounded_mlflow.chdir(tmp_path)
        code, err = run(["webhooks", "list", "--platform", "mlflow"], capsys)
        assert code == ExitCode.USAGE
        assert_one_line(err, "--tracking-uri", "MLFLOW_TRACKING_URI")
        assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/

    def test_an_unreachable_tracking_server_fails_within_seconds(
        self, bounded_mlflow: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        uri = f"http://127.0.0.1:{closed_port()}"
        began = time.monotonic()
        code, err = run(["webhooks", "list", "--platform", "mlflow", "--tracking-uri", uri], capsys)
        elapsed = time.monotonic() - began
        assert code == ExitCode.UNAVAILABLE
        assert_one_line(err, f"the MLflow tracking server at {uri} did not answer (connection refused)")
        assert elapsed < 30, f"an unreachable tracking server took {elapsed:.0f} s (MLflow's default: minutes)"


class TestParser:
    @pytest.mark.parametrize(
        "argv",
        [
            ["-v", "demo"],
            ["demo", "-v"],
            ["webhooks", "list", "--platform", "mlflow", "-v"],
            ["webhooks", "-v", "list", "--platform", "mlflow"],
            ["--verbose", "doctor", "--json"],
            ["doctor", "--verbose"],
        ],
    )
    def test_verbose_goes_before_or_after_the_command(self, argv: list[str]) -> None:
        assert build_parser().parse_args(argv).verbose is True

    def test_verbose_is_off_unless_given(self) -> None:
        assert build_parser().parse_args(["webhooks", "list", "--platform", "mlflow"]).verbose is False

    def test_every_option_of_every_command_has_help(self) -> None:
        missing = []
        for path, parser in _all_parsers(build_parser(), "mlflow-relay"):
            for action in parser._actions:
                if action.option_strings and not (action.help and action.help.strip()):
                    missing.append(f"{path} {action.option_strings[0]}")
        assert missing == []

    def test_serve_and_platform_options_say_what_they_mean(self) -> None:
        parsers = dict(_all_parsers(build_parser(), "mlflow-relay"))
        serve = {a.dest: a.help for a in parsers["mlflow-relay serve"]._actions}
        assert "127.0.0.1" in serve["host"] and "7071" in serve["port"]
        create = {a.dest: a.help for a in parsers["mlflow-relay webhooks create"]._actions}
        assert "databricks" in create["platform"] and "mlflow" in create["platform"]


def _all_parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{path} {name}")

"""``devops.auth``: a PAT is an explicit opt-in that says so once, at first use."""

from __future__ import annotations

import base64
import logging

import pytest

from devops.auth import PAT_WARNING, PatAuth
from relay.settings import settings_from_env

PAT = "pat-auth-unit-5d1c"


class TestPatAuth:
    """The Basic header, and the retirement warning."""

    def test_header_is_basic_with_an_empty_user(self) -> None:
        auth = PatAuth(lambda: PAT, lambda: None)
        assert auth.authorization() == "Basic " + base64.b64encode(f":{PAT}".encode()).decode()

    def test_first_use_warns_once_and_never_logs_the_pat(self, caplog: pytest.LogCaptureFixture) -> None:
        auth = PatAuth(lambda: PAT, lambda: None)
        with caplog.at_level(logging.WARNING, logger="relay.devops"):
            for _ in range(3):
                auth.authorization()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == [PAT_WARNING]
        assert "managed-identity" in PAT_WARNING and "1 December 2026" in PAT_WARNING
        assert PAT not in caplog.text

    def test_building_it_warns_nothing(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="relay.devops"):
            PatAuth(lambda: PAT, lambda: None)
        assert caplog.records == []


class TestDefaultAuth:
    def test_managed_identity_is_the_default_and_pat_an_opt_in(self) -> None:
        minimal = {"DEVOPS_ORG_URL": "https://dev.azure.com/contoso", "DEVOPS_PROJECT": "MLOps"}
        assert settings_from_env(minimal).devops_auth == "managed-identity"
        assert settings_from_env({**minimal, "DEVOPS_AUTH": "pat"}).devops_auth == "pat"

"""Signature verification for both senders, over raw bytes, with known-answer vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from tests.recorded_samples import RECORDED_SEQUENCE
from webhook.delivery import Delivery
from webhook.errors import AuthenticationFailed, StaleEvent
from webhook.signatures import (
    check_freshness,
    mlflow_signed_headers,
    sign_databricks,
    sign_mlflow,
    verify_databricks_signature,
    verify_mlflow_signature,
)

SAMPLE_NAMES = sorted(RECORDED_SEQUENCE)  # not a glob: a missing recording fails instead of vanishing
MAX_AGE = 300.0


def _verify_recorded(sample, *, body=None, secrets=None, headers=None, now=None):
    headers = {k.lower(): v for k, v in (headers or sample.headers).items()}
    verify_mlflow_signature(
        sample.body if body is None else body,
        delivery_id=headers.get("x-mlflow-delivery-id"),
        timestamp=headers.get("x-mlflow-timestamp"),
        signature=headers.get("x-mlflow-signature"),
        secrets=[sample.secret] if secrets is None else secrets,
        now=sample.timestamp + 5 if now is None else now,
        max_age=MAX_AGE,
    )


class TestRecordedMlflowDeliveries:
    """Known answers: every delivery recorded from a real MLflow 3.17.2 server verifies."""

    @pytest.mark.parametrize("name", SAMPLE_NAMES)
    def test_recorded_delivery_verifies_with_its_secret(self, recorded_deliveries, name):
        _verify_recorded(recorded_deliveries[name])

    @pytest.mark.parametrize("name", SAMPLE_NAMES)
    def test_recorded_delivery_verifies_through_delivery(self, recorded_deliveries, name):
        sample = recorded_deliveries[name]
        delivery = Delivery.from_http(sample.headers, sample.body)
        delivery.verify(secrets=[sample.secret], now=sample.timestamp + 5, max_age=MAX_AGE)

    @pytest.mark.parametrize("name", SAMPLE_NAMES)
    def test_tampered_body_is_rejected(self, recorded_deliveries, name):
        sample = recorded_deliveries[name]
        tampered = sample.body.replace(b"aott-wine-model", b"aott-wine-modem").replace(
            b"example_model", b"example_modem"
        )
        assert tampered != sample.body
        with pytest.raises(AuthenticationFailed, match="does not match"):
            _verify_recorded(sample, body=tampered)

    @pytest.mark.parametrize("name", SAMPLE_NAMES)
    def test_reserialised_json_is_rejected(self, recorded_deliveries, name):
        sample = recorded_deliveries[name]
        reserialised = json.dumps(json.loads(sample.body), separators=(",", ":")).encode()
        with pytest.raises(AuthenticationFailed):
            _verify_recorded(sample, body=reserialised)

    @pytest.mark.parametrize("name", SAMPLE_NAMES)
    def test_wrong_secret_is_rejected(self, recorded_deliveries, name):
        with pytest.raises(AuthenticationFailed, match="does not match"):
            _verify_recorded(recorded_deliveries[name], secrets=["not-the-secret"])

    def test_previous_secret_is_accepted_during_rotation(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        _verify_recorded(sample, secrets=["the-new-secret", sample.secret])

    def test_signature_without_v1_prefix_is_rejected(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        digest = sample.headers["X-MLflow-Signature"].removeprefix("v1,")
        for bad in (digest, "v2," + digest, "V1," + digest, "v1;" + digest):
            headers = {**sample.headers, "X-MLflow-Signature": bad}
            with pytest.raises(AuthenticationFailed, match="v1,"):
                _verify_recorded(sample, headers=headers)

    def test_non_base64_signature_is_rejected(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        headers = {**sample.headers, "X-MLflow-Signature": "v1,***not-base64***"}
        with pytest.raises(AuthenticationFailed):
            _verify_recorded(sample, headers=headers)

    def test_one_matching_signature_among_several_is_enough(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        other = sign_mlflow(sample.body, delivery_id=sample.delivery_id, timestamp=sample.timestamp, secret="x")
        headers = {**sample.headers, "X-MLflow-Signature": f"{other} {sample.headers['X-MLflow-Signature']}"}
        _verify_recorded(sample, headers=headers)

    def test_changed_delivery_id_breaks_the_signature(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        headers = {**sample.headers, "X-MLflow-Delivery-Id": "00000000-0000-0000-0000-000000000000"}
        with pytest.raises(AuthenticationFailed, match="does not match"):
            _verify_recorded(sample, headers=headers)

    def test_changed_timestamp_breaks_the_signature(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        headers = {**sample.headers, "X-MLflow-Timestamp": str(sample.timestamp - 1)}
        with pytest.raises(AuthenticationFailed, match="does not match"):
            _verify_recorded(sample, headers=headers)

    def test_stale_event_is_rejected(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        with pytest.raises(StaleEvent, match="ago"):
            _verify_recorded(sample, now=sample.timestamp + MAX_AGE + 1)

    def test_future_event_is_rejected(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        with pytest.raises(StaleEvent, match="future"):
            _verify_recorded(sample, now=sample.timestamp - 61)

    def test_stale_check_runs_before_the_signature_check(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        with pytest.raises(StaleEvent):
            _verify_recorded(sample, secrets=["wrong"], now=sample.timestamp + MAX_AGE + 1)

    @pytest.mark.parametrize("header", ["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"])
    def test_missing_header_is_rejected(self, recorded_deliveries, header):
        sample = recorded_deliveries["model_version.created"]
        headers = {k: v for k, v in sample.headers.items() if k != header}
        with pytest.raises(AuthenticationFailed, match=header) as caught:
            _verify_recorded(sample, headers=headers)
        assert not isinstance(caught.value, StaleEvent)

    def test_non_numeric_timestamp_is_rejected(self, recorded_deliveries):
        sample = recorded_deliveries["model_version.created"]
        headers = {**sample.headers, "X-MLflow-Timestamp": "2026-11-28T15:29:00Z"}
        with pytest.raises(AuthenticationFailed, match="X-MLflow-Timestamp"):
            _verify_recorded(sample, headers=headers)

    def test_sign_mlflow_reproduces_the_recorded_signature(self, recorded_deliveries):
        for sample in recorded_deliveries.values():
            expected = sign_mlflow(
                sample.body, delivery_id=sample.delivery_id, timestamp=sample.timestamp, secret=sample.secret
            )
            assert expected == sample.headers["X-MLflow-Signature"]

    def test_mlflow_signed_headers_are_the_recorded_headers(self, recorded_deliveries):
        for sample in recorded_deliveries.values():
            headers = mlflow_signed_headers(
                sample.body, delivery_id=sample.delivery_id, timestamp=sample.timestamp, secret=sample.secret
            )
            assert headers == sample.headers


class TestFreshness:
    def test_event_inside_the_window_passes(self):
        check_freshness(1000.0, now=1100.0, max_age=100.0)
        check_freshness(1060.0, now=1000.0, max_age=100.0)

    def test_event_just_too_old_is_stale(self):
        with pytest.raises(StaleEvent):
            check_freshness(999.0, now=1100.0, max_age=100.0)

    def test_event_just_too_far_ahead_is_stale(self):
        with pytest.raises(StaleEvent):
            check_freshness(1061.0, now=1000.0, max_age=100.0)

    def test_stale_event_is_an_authentication_failure_answering_401(self):
        assert issubclass(StaleEvent, AuthenticationFailed)
        assert StaleEvent("x").status == 401


class TestDatabricksSignature:
    """Lower-case hex HMAC-SHA256 of the raw body, no timestamp in the signature."""

    SECRET = "dbx-webhook-secret"
    BODY = b'{"event": "MODEL_VERSION_CREATED", "model_name": "m"}'

    def test_known_answer_vector(self):
        expected = hmac.new(self.SECRET.encode(), self.BODY, hashlib.sha256).hexdigest()
        assert sign_databricks(self.BODY, secret=self.SECRET) == expected
        verify_databricks_signature(self.BODY, signature=expected, secrets=[self.SECRET])

    def test_upper_case_hex_is_accepted(self):
        expected = hmac.new(self.SECRET.encode(), self.BODY, hashlib.sha256).hexdigest()
        verify_databricks_signature(self.BODY, signature=expected.upper(), secrets=[self.SECRET])

    def test_emoji_and_odd_whitespace_verify_over_raw_bytes(self):
        body = '{"text":   "🚀  x" ,\n "model_name" :"m"}'.encode()
        signature = hmac.new(self.SECRET.encode(), body, hashlib.sha256).hexdigest()
        verify_databricks_signature(body, signature=signature, secrets=[self.SECRET])
        for reserialised in (
            json.dumps(json.loads(body)).encode(),
            json.dumps(json.loads(body), ensure_ascii=False).encode(),
        ):
            assert reserialised != body
            with pytest.raises(AuthenticationFailed):
                verify_databricks_signature(reserialised, signature=signature, secrets=[self.SECRET])

    def test_tampered_body_is_rejected(self):
        signature = sign_databricks(self.BODY, secret=self.SECRET)
        with pytest.raises(AuthenticationFailed, match="does not match"):
            verify_databricks_signature(self.BODY + b" ", signature=signature, secrets=[self.SECRET])

    def test_wrong_secret_is_rejected(self):
        signature = sign_databricks(self.BODY, secret="other")
        with pytest.raises(AuthenticationFailed, match="does not match"):
            verify_databricks_signature(self.BODY, signature=signature, secrets=[self.SECRET])

    def test_previous_secret_is_accepted_during_rotation(self):
        signature = sign_databricks(self.BODY, secret="old-secret")
        verify_databricks_signature(self.BODY, signature=signature, secrets=[self.SECRET, "old-secret"])

    def test_empty_secret_never_matches(self):
        signature = hmac.new(b"", self.BODY, hashlib.sha256).hexdigest()
        with pytest.raises(AuthenticationFailed):
            verify_databricks_signature(self.BODY, signature=signature, secrets=[""])

    @pytest.mark.parametrize("signature", [None, ""])
    def test_missing_signature_is_rejected(self, signature):
        with pytest.raises(AuthenticationFailed, match="missing"):
            verify_databricks_signature(self.BODY, signature=signature, secrets=[self.SECRET])

    def test_non_hex_signature_is_rejected(self):
        with pytest.raises(AuthenticationFailed, match="hex"):
            verify_databricks_signature(self.BODY, signature="zz" * 32, secrets=[self.SECRET])

    def test_base64_signature_is_rejected(self):
        digest = hmac.new(self.SECRET.encode(), self.BODY, hashlib.sha256).digest()
        with pytest.raises(AuthenticationFailed):
            verify_databricks_signature(self.BODY, signature=base64.b64encode(digest).decode(), secrets=[self.SECRET])

    def test_truncated_signature_is_rejected(self):
        signature = sign_databricks(self.BODY, secret=self.SECRET)
        with pytest.raises(AuthenticationFailed):
            verify_databricks_signature(self.BODY, signature=signature[:32], secrets=[self.SECRET])


class TestMlflowSignatureVector:
    def test_known_answer_vector_computed_independently(self):
        body = '{"entity": "model_version", "data": {"name": "🚀"}}'.encode()
        message = b"d-1.1700000000." + body
        expected = "v1," + base64.b64encode(hmac.new(b"k", message, hashlib.sha256).digest()).decode()
        assert sign_mlflow(body, delivery_id="d-1", timestamp=1700000000, secret="k") == expected
        verify_mlflow_signature(
            body,
            delivery_id="d-1",
            timestamp="1700000000",
            signature=expected,
            secrets=["k"],
            now=1700000001,
            max_age=60,
        )

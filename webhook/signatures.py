"""Webhook signatures for both senders: pure functions over raw bytes, no I/O.

Databricks registry webhooks send ``X-Databricks-Signature``: the lowercase hex
HMAC-SHA256 of the raw body. Open-source MLflow (3.3+) sends
``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over ``"{delivery_id}.{timestamp}." + body``,
with ``X-MLflow-Timestamp`` in unix seconds. Secrets are keyword-only and several may be
given (current and previous, during rotation); comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from webhook.errors import AuthenticationFailed, StaleEvent

MAX_FUTURE_SKEW_SECONDS = 60
MAX_TIMESTAMP_DIGITS = 15
_MLFLOW_VERSION_PREFIX = "v1,"


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def sign_databricks(body: bytes, *, secret: str) -> str:
    """Return the ``X-Databricks-Signature`` value for ``body``."""
    return _hmac_sha256(secret, body).hex()


def verify_databricks_signature(body: bytes, *, signature: str | None, secrets: Sequence[str]) -> None:
    """Check a Databricks signature against each secret.

    Raises:
        AuthenticationFailed: the header is missing, not hex, or matches no secret.
    """
    if not signature:
        raise AuthenticationFailed("missing X-Databricks-Signature header")
    try:
        given = bytes.fromhex(signature.strip())
    except ValueError:
        raise AuthenticationFailed("X-Databricks-Signature is not a hex digest") from None
    if not any(hmac.compare_digest(given, _hmac_sha256(s, body)) for s in secrets if s):
        raise AuthenticationFailed("signature does not match")


def _mlflow_message(body: bytes, delivery_id: str, timestamp: str) -> bytes:
    return f"{delivery_id}.{timestamp}.".encode() + body


def sign_mlflow(body: bytes, *, delivery_id: str, timestamp: int | str, secret: str) -> str:
    """Return the ``X-MLflow-Signature`` value (``v1,<base64>``) MLflow would send."""
    digest = _hmac_sha256(secret, _mlflow_message(body, delivery_id, str(timestamp)))
    return _MLFLOW_VERSION_PREFIX + base64.b64encode(digest).decode("ascii")


def mlflow_signed_headers(body: bytes, *, delivery_id: str, timestamp: int | str, secret: str) -> dict[str, str]:
    """The headers MLflow sends with ``body``: content type, delivery id, timestamp, signature."""
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": sign_mlflow(body, delivery_id=delivery_id, timestamp=timestamp, secret=secret),
    }


def check_freshness(
    event_time: float, *, now: float, max_age: float, max_future: float = MAX_FUTURE_SKEW_SECONDS
) -> None:
    """Refuse an event signed too long ago (a replay) or too far in the future.

    Args:
        event_time: the signed event time, unix seconds.
        now: the current time, unix seconds (a parameter so tests control the clock).

    Raises:
        StaleEvent: outside ``[now - max_age, now + max_future]``.
    """
    if event_time < now - max_age:
        raise StaleEvent(f"stale event: signed {int(now - event_time)} s ago (limit {int(max_age)} s)")
    if event_time > now + max_future:
        raise StaleEvent(f"stale event: timestamp {int(event_time - now)} s in the future (limit {int(max_future)} s)")


def verify_mlflow_signature(
    body: bytes,
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[str],
    now: float,
    max_age: float,
) -> None:
    """Check an MLflow delivery: the timestamp window first, then the signature.

    Several space-separated ``v1,`` signatures are accepted (any one matching is enough).

    Raises:
        AuthenticationFailed: a header is missing or malformed, or no signature matches.
        StaleEvent: the timestamp is outside the freshness window.
    """
    if not delivery_id:
        raise AuthenticationFailed("missing X-MLflow-Delivery-Id header")
    if not signature:
        raise AuthenticationFailed("missing X-MLflow-Signature header")
    # ASCII digits only ("²".isdigit() is True, int("²") fails) and a bounded length (int() refuses
    # over 4300 digits; a huge value overflows the float comparison): anything else is a 401, not a 500.
    if not timestamp or not (timestamp.strip().isascii() and timestamp.strip().isdigit()):
        raise AuthenticationFailed("missing or non-numeric X-MLflow-Timestamp header")
    timestamp = timestamp.strip()
    if len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise StaleEvent(f"stale event: X-MLflow-Timestamp has more than {MAX_TIMESTAMP_DIGITS} digits")
    check_freshness(int(timestamp), now=now, max_age=max_age)
    given = _decode_mlflow_signatures(signature)
    message = _mlflow_message(body, delivery_id, timestamp)
    expected = [_hmac_sha256(s, message) for s in secrets if s]
    if not any(hmac.compare_digest(g, e) for g in given for e in expected):
        raise AuthenticationFailed("signature does not match")


def _decode_mlflow_signatures(header: str) -> list[bytes]:
    decoded = []
    for part in header.split():
        if not part.startswith(_MLFLOW_VERSION_PREFIX):
            continue
        try:
            decoded.append(base64.b64decode(part[len(_MLFLOW_VERSION_PREFIX) :], validate=True))
        except (binascii.Error, ValueError):
            continue
    if not decoded:
        raise AuthenticationFailed("X-MLflow-Signature has no v1,<base64> signature")
    return decoded

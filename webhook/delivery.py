"""One inbound delivery: tell the sender apart, verify it, then parse it. Pure, no I/O.

Verification always runs over the raw bytes before any JSON is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from webhook.errors import AuthenticationFailed, MethodNotAllowed, PayloadTooLarge
from webhook.events import RegistryEvent, parse_databricks_event, parse_mlflow_event
from webhook.signatures import check_freshness, verify_databricks_signature, verify_mlflow_signature

DATABRICKS_SIGNATURE = "x-databricks-signature"
MLFLOW_SIGNATURE = "x-mlflow-signature"
MLFLOW_DELIVERY_ID = "x-mlflow-delivery-id"
MLFLOW_TIMESTAMP = "x-mlflow-timestamp"
MAX_BODY_BYTES = 64 * 1024


class Sender(StrEnum):
    DATABRICKS = "databricks"
    MLFLOW = "mlflow"


def sender_of_body(body: bytes) -> Sender:
    """Which sender's format a body is in, by its shape (for tools that have no headers)."""
    try:
        document = json.loads(body)
    except ValueError:
        return Sender.DATABRICKS
    is_mlflow = isinstance(document, dict) and "entity" in document and "action" in document
    return Sender.MLFLOW if is_mlflow else Sender.DATABRICKS


@dataclass(frozen=True)
class Delivery:
    """The raw request as received: lower-cased header names and the exact body bytes."""

    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> Delivery:
        return cls({k.lower(): v for k, v in headers.items()}, body)

    def precheck(self, method: str) -> None:
        """The checks that need no configuration: POST, a bounded body, a signature header.

        Raises:
            MethodNotAllowed, PayloadTooLarge, AuthenticationFailed (unsigned).
        """
        if method.upper() != "POST":
            raise MethodNotAllowed(f"method {method.upper()!r} not allowed; webhooks are delivered with POST")
        if len(self.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is {len(self.body)} bytes; the limit is {MAX_BODY_BYTES}")
        _ = self.sender

    @property
    def sender(self) -> Sender:
        """Which sender signed this delivery, by its signature header.

        Raises:
            AuthenticationFailed: neither signature header is present.
        """
        if MLFLOW_SIGNATURE in self.headers:
            return Sender.MLFLOW
        if DATABRICKS_SIGNATURE in self.headers:
            return Sender.DATABRICKS
        raise AuthenticationFailed("unsigned request: expected an X-Databricks-Signature or X-MLflow-Signature header")

    @property
    def delivery_id_hint(self) -> str | None:
        """The sender's delivery id when it sends one (for logs before parsing)."""
        return self.headers.get(MLFLOW_DELIVERY_ID)

    def verify(self, *, secrets: Sequence[str], now: float, max_age: float) -> None:
        """Check the signature (and, for MLflow, the signed timestamp first).

        Raises:
            AuthenticationFailed: missing/malformed headers or no secret matches.
            StaleEvent: MLflow's timestamp is outside the freshness window.
        """
        if self.sender is Sender.MLFLOW:
            verify_mlflow_signature(
                self.body,
                delivery_id=self.headers.get(MLFLOW_DELIVERY_ID),
                timestamp=self.headers.get(MLFLOW_TIMESTAMP),
                signature=self.headers.get(MLFLOW_SIGNATURE),
                secrets=secrets,
                now=now,
                max_age=max_age,
            )
        else:
            verify_databricks_signature(self.body, signature=self.headers.get(DATABRICKS_SIGNATURE), secrets=secrets)

    def parse(self, *, now: float, max_age: float) -> RegistryEvent:
        """Parse a verified delivery into a ``RegistryEvent``.

        Databricks' only timestamp is inside the signed body, so its freshness is checked here.

        Raises:
            PayloadInvalid: malformed JSON or schema error.
            StaleEvent: Databricks ``event_timestamp`` outside the freshness window.
        """
        if self.sender is Sender.MLFLOW:
            return parse_mlflow_event(self.body, delivery_id=self.headers[MLFLOW_DELIVERY_ID])
        event = parse_databricks_event(self.body)
        check_freshness(event.event_time.timestamp(), now=now, max_age=max_age)
        return event

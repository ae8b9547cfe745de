"""The relay's one exception tree; each class carries the HTTP status it answers with.

    RelayError                      500  base class; never raised directly
    ├── RequestRejected             4xx  the sender's request is at fault; do not retry it
    │   ├── MethodNotAllowed        405
    │   ├── PayloadTooLarge         413
    │   ├── PayloadInvalid          400  malformed JSON or a schema error (names the field)
    │   └── AuthenticationFailed    401  missing, malformed or wrong signature
    │       └── StaleEvent          401  signed timestamp outside the freshness window
    ├── ConfigurationError          500  a missing/invalid setting, rules file or secret
    │                                    (the answer is generic; the log names it)
    └── (relay.ports)                    what the adapters behind the ports raise:
        ├── PipelineRejected        424  Azure DevOps refused the run (4xx, sign-in page, ...)
        ├── ClaimLost               500  a ledger entry moved on under its holder (fencing)
        └── DependencyUnavailable   503  transient; carries retry_after
            ├── DevOpsUnavailable
            ├── SecretsUnavailable       Key Vault or the managed identity
            └── StorageUnavailable       the delivery ledger or the retry queue

The core (``webhook/``) raises only the request errors and ``ConfigurationError``; the
dependency errors live with the ports they belong to. ``relay.answers`` is the single place
that turns any of them into an answer. Messages never hold a secret or a request body.
"""

from __future__ import annotations

from http import HTTPStatus


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RequestRejected(RelayError):
    """The request itself is wrong; answering 4xx tells the sender not to retry."""

    status = HTTPStatus.BAD_REQUEST


class MethodNotAllowed(RequestRejected):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class PayloadTooLarge(RequestRejected):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class PayloadInvalid(RequestRejected):
    status = HTTPStatus.BAD_REQUEST


class AuthenticationFailed(RequestRejected):
    status = HTTPStatus.UNAUTHORIZED


class StaleEvent(AuthenticationFailed):
    """The signed timestamp is too old or too far in the future (a replay, or a bad clock)."""


class ConfigurationError(RelayError):
    """The operator's configuration is wrong: a setting, the rules file, or a secret."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR

"""Errors the Databricks job and the UC bridge raise on purpose.

    JobError                    base; its message is safe to print and to store as a tag
    ├── ParameterError          the job was started with missing or malformed parameters (exit 2)
    ├── ModelVersionNotReady    registration failed, or did not finish within the timeout
    ├── ValidationFailed        the model did not load, has no signature, or a check failed
    ├── DeliveryFailed          the relay refused a UC bridge event (4xx) or stayed unavailable
    └── AuditFailed             the audit row could not be written (exit 3); the job never skips it

Catch ``JobError`` in an entry point and turn it into an exit code; anything else is a bug
and should surface with its traceback.
"""

from __future__ import annotations


class JobError(Exception):
    """Base class; ``exit_code`` is what the entry point returns."""

    exit_code = 1


class ParameterError(JobError):
    exit_code = 2


class ModelVersionNotReady(JobError):
    pass


class ValidationFailed(JobError):
    pass


class DeliveryFailed(JobError):
    pass


class AuditFailed(JobError):
    exit_code = 3

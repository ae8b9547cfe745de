"""What ``mlflow-relay`` exits with, and the one line it prints for any error.

Every command returns an ``ExitCode``; every error becomes one line on stderr and the code
that says what happened (README, "Command line"). A traceback never reaches the user: an
unexpected error is reported as an internal error, also in one line.
"""

from __future__ import annotations

from enum import IntEnum

from relay.ports import DependencyUnavailable, PipelineRejected
from webhook.errors import ConfigurationError, RelayError, RequestRejected


class ExitCode(IntEnum):
    """The exit codes, documented in the README; scripts may rely on them."""

    OK = 0
    FAILED = 1  # the command ran and found something wrong (a doctor check, a test delivery, the demo)
    USAGE = 2  # the command line or an input file is wrong (argparse exits 2 as well)
    CONFIGURATION = 3  # a setting, the rules file, a secret, a missing extra, sign-in not set up
    UNAVAILABLE = 4  # a service did not answer: retry later
    REFUSED = 5  # a service answered and refused: permission, unknown id, invalid request
    INTERNAL = 70  # a bug in the tool (sysexits' EX_SOFTWARE): please report it
    INTERRUPTED = 130  # Ctrl+C


class CliError(Exception):
    """An error a command already put in words, with the exit code it means."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def first_line(text: str, *, limit: int = 300) -> str:
    """The first non-empty line of ``text``, bounded (SDK messages run to tens of lines)."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one line for ``exc``."""
    if isinstance(exc, CliError):
        return exc.code, first_line(exc.message)
    if isinstance(exc, RelayError):
        return _relay_code(exc), first_line(exc.detail)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError) and exc.filename:
        return ExitCode.USAGE, f"cannot read {exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError):
        return ExitCode.UNAVAILABLE, first_line(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError):
        return ExitCode.USAGE, first_line(str(exc))
    return ExitCode.INTERNAL, first_line(f"internal error ({type(exc).__name__}: {exc}); please report it")


def _relay_code(exc: RelayError) -> ExitCode:
    if isinstance(exc, RequestRejected):
        return ExitCode.USAGE
    if isinstance(exc, ConfigurationError):
        return ExitCode.CONFIGURATION
    if isinstance(exc, DependencyUnavailable):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, PipelineRejected):
        return ExitCode.REFUSED
    return ExitCode.INTERNAL

"""Talking to the Azure Pipelines agent from a step: logging commands, and text that is safe to print.

The agent acts on ``##vso[...]`` anywhere in a line it reads from a step, so any text that a
registry user controls (a model name, an alias, a state message) goes through ``log_text`` before
it is printed: control characters are dropped (no new line can start a command) and runs of ``#``
are broken up (no ``##vso[`` or ``##[`` survives).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HASH_RUN = re.compile(r"#(?=#)")
# Characters Azure DevOps refuses in a run (build) number.
_BUILD_NUMBER_FORBIDDEN = re.compile(r'["/:<>\\|?@*]')
MAX_BUILD_NUMBER = 255

Printer = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def log_text(value: object) -> str:
    """``value`` as text that cannot start or smuggle a logging command."""
    return _HASH_RUN.sub("# ", _CONTROL.sub(" ", str(value)))


def _command_data(value: str) -> str:
    # The agent unescapes these in a command's data part.
    return log_text(value).replace("%", "%AZP25")


def build_number(model_name: str, version: str, current: str) -> str:
    """A run number that names the model and version, within Azure DevOps' character rules."""
    text = f"{model_name} v{version or '-'} {current}".strip()
    text = _BUILD_NUMBER_FORBIDDEN.sub("_", log_text(text))[:MAX_BUILD_NUMBER]
    return text.rstrip(".") or "deployment"


class Agent:
    """Emits logging commands and plain lines; ``out`` is ``print`` in a pipeline, a list in tests."""

    def __init__(self, out: Printer = _print) -> None:
        self._out = out

    def line(self, text: str) -> None:
        """A plain log line; the caller passes user text through ``log_text``."""
        self._out(text)

    def error(self, text: str) -> None:
        """An error annotation on the run (shown on its summary page)."""
        self._out(f"##vso[task.logissue type=error]{_command_data(text)}")

    def warning(self, text: str) -> None:
        self._out(f"##vso[task.logissue type=warning]{_command_data(text)}")

    def add_build_tag(self, tag: str) -> None:
        self._out(f"##vso[build.addbuildtag]{_command_data(tag)}")

    def update_build_number(self, number: str) -> None:
        self._out(f"##vso[build.updatebuildnumber]{_command_data(number)}")

"""The file set ``func azure functionapp publish`` uploads: Core Tools' ``.funcignore`` rules, in Python.

Core Tools (``Azure.Functions.Cli``) filters the app folder with ``GitIgnoreParser``, a port of the
``gitignore-parser`` npm package, which is *not* git's matcher:

- each pattern becomes a regular expression anchored at the start of the path relative to the
  app root, followed by a word boundary (``^((p1)|(p2))\\b``), so a bare name matches only at
  the top level, and ``tests`` also drops ``tests.py``;
- ``**`` becomes ``(.+)`` and ``*`` becomes ``([^/]+)`` (at least one character);
- a leading ``/`` is dropped, ``#`` starts a comment, ``!pattern`` re-accepts what it matches.

Before that filter, folders named ``.git`` or ``.vscode`` and files named ``.funcignore``,
``.gitignore``, ``local.settings.json`` or ``project.lock.json`` are skipped at any depth.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ALWAYS_SKIPPED_DIRS = frozenset({".git", ".vscode"})
ALWAYS_SKIPPED_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})
_REGEX_SPECIALS = re.compile(r"[\-\[\]/{}()+?.\\^$|]")
_NEVER = re.compile(r"$^")


def _pattern_to_regex(pattern: str) -> str:
    escaped = _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), pattern)
    return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")


def _compile(patterns: list[str]) -> re.Pattern[str]:
    if not patterns:
        return _NEVER
    alternatives = ")|(".join(_pattern_to_regex(p) for p in sorted(patterns))
    # ASCII: ECMAScript's \b knows only [A-Za-z0-9_] as word characters.
    return re.compile(f"^(({alternatives}))\\b", re.ASCII)


class FuncIgnore:
    """A ``.funcignore`` matcher that accepts and denies exactly as Core Tools does."""

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = negative if line.startswith("!") else positive
            line = line.removeprefix("!").removeprefix("/")
            target.append(line)
        self._positive = _compile(positive)
        self._negative = _compile(negative)
        self.has_negations = bool(negative)

    def accepts(self, path: str) -> bool:
        """True when ``path`` (relative, ``/``-separated) ships."""
        return bool(self._negative.search(path)) or not self._positive.search(path)

    def denies(self, path: str) -> bool:
        return not self.accepts(path)


def publish_file_set(app_root: Path) -> list[str]:
    """Return the relative ``/``-separated paths Core Tools would upload from ``app_root``, sorted."""
    ignore_file = app_root / ".funcignore"
    rules = FuncIgnore(ignore_file.read_text(encoding="utf-8")) if ignore_file.is_file() else None
    shipped: list[str] = []
    for folder, dirs, files in os.walk(app_root):
        relative_folder = Path(folder).relative_to(app_root).as_posix()
        prefix = "" if relative_folder == "." else relative_folder + "/"
        dirs[:] = [d for d in dirs if d not in ALWAYS_SKIPPED_DIRS]
        if rules is not None and not rules.has_negations:
            # Without negations nothing below a denied folder can come back: skip walking .venv.
            dirs[:] = [d for d in dirs if rules.accepts(prefix + d)]
        for name in files:
            relative = prefix + name
            if name in ALWAYS_SKIPPED_FILES:
                continue
            if rules is None or rules.accepts(relative):
                shipped.append(relative)
    return sorted(shipped)


def copy_file_set(app_root: Path, files: list[str], destination: Path) -> None:
    """Copy ``files`` (relative to ``app_root``) into ``destination``, keeping the layout."""
    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(app_root / relative, target)

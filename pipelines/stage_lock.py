"""The stage id that gives each model its own exclusive lock, and the YAML expression that builds it.

A stage with ``lockBehavior`` gets an exclusive lock of its own, keyed by the stage id. Naming
the stage after the model makes runs for one model and stage queue behind each other (and, with
``runLatest``, a waiting run is cancelled when a newer one for the same model arrives) while
runs for other models go ahead. Stage ids may hold only ``[A-Za-z0-9_]``, so the model name is
escaped: ``_`` becomes ``_5F`` and every other ASCII punctuation character ``_<hex>``. Because
``_`` itself is escaped, two different names never share an id (no accidental cancellation).

The template cannot call Python, so ``stage_id_expression`` writes the same escaping as a chain
of ``replace()`` calls; tests/pipelines/test_stage_lock.py checks the two agree.
"""

from __future__ import annotations

import string

STAGE_PREFIX = "deploy_"
# `_` first: the escapes below introduce underscores that must not be escaped again.
ESCAPED = "_" + "".join(c for c in string.punctuation + " " if c != "_")


def _escape(char: str) -> str:
    return f"_{ord(char):02X}"


def stage_id(stage_label: str, model_name: str) -> str:
    """The stage id the template computes for ``model_name`` in ``stage_label``.

    Characters outside ASCII letters, digits and punctuation stay as they are; Azure DevOps then
    refuses to queue the run and says why (see docs/pipelines.md).
    """
    escaped = model_name
    for char in ESCAPED:
        escaped = escaped.replace(char, _escape(char))
    return f"{STAGE_PREFIX}{stage_label}_{escaped}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def stage_id_expression(parameter: str = "parameters.model_name") -> str:
    """The template expression (without ``${{ }}``) that escapes ``parameter`` like ``stage_id``."""
    expression = parameter
    for char in ESCAPED:
        expression = f"replace({expression}, {_literal(char)}, {_literal(_escape(char))})"
    return expression

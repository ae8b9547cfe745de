"""Validate a model version: it loads, it has a signature, and user checks pass.

User checks are the documented hook: ``--checks=package.module:function`` (comma-separated
for several). Each is called as ``function(model, context)`` where ``model`` is the loaded
``mlflow.pyfunc.PyFuncModel`` and ``context`` a ``CheckContext``. A check fails by raising
(the message becomes the reason) or by returning ``False``; anything else passes. The module
must be importable on the job's cluster, e.g. shipped in the same wheel or a workspace file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from databricks_job.errors import ParameterError, ValidationFailed

ModelLoader = Callable[[str], Any]
Check = Callable[[Any, "CheckContext"], object]


@dataclass(frozen=True)
class CheckContext:
    """What a user check may want besides the model itself."""

    model_name: str
    model_version: str
    model_uri: str
    event: str
    stage: str
    alias: str


def load_pyfunc(model_uri: str) -> Any:
    """The default loader: ``mlflow.pyfunc.load_model``."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


def resolve_check(spec: str) -> Check:
    """Import ``package.module:function``.

    Raises:
        ParameterError: the spec is malformed, the module cannot be imported or the name is
            not a callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ParameterError(f"check {spec!r} must look like 'package.module:function'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ParameterError(f"check {spec!r} cannot be loaded: {exc}") from exc
    if not callable(target):
        raise ParameterError(f"check {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def validate_model(context: CheckContext, *, checks: Sequence[str], loader: ModelLoader = load_pyfunc) -> list[str]:
    """Run every validation and return the names of the checks that passed.

    Raises:
        ParameterError: a check spec cannot be resolved (before the model is loaded).
        ValidationFailed: naming the first failing step.
    """
    resolved = [(spec, resolve_check(spec)) for spec in checks]
    try:
        model = loader(context.model_uri)
    except Exception as exc:
        # Any loader error (missing artifact, bad flavor, missing dependency) means "does not load".
        detail = f"{type(exc).__name__}: {exc}"
        raise ValidationFailed(f"model {context.model_uri} does not load: {detail}") from exc
    metadata = getattr(model, "metadata", None)
    if getattr(metadata, "signature", None) is None:
        raise ValidationFailed(f"model {context.model_uri} has no signature; log it with one")
    passed = ["loads", "signature"]
    for spec, check in resolved:
        try:
            result = check(model, context)
        except Exception as exc:
            raise ValidationFailed(f"check {spec} failed: {type(exc).__name__}: {exc}") from exc
        if result is False:
            raise ValidationFailed(f"check {spec} returned False")
        passed.append(spec)
    return passed

"""pipelines/stage_lock.py: the stage id per model is valid, injective, and what the template computes."""

from __future__ import annotations

import re
import string

from hypothesis import given
from hypothesis import strategies as st

from pipelines.stage_lock import stage_id, stage_id_expression

ASCII_NAMES = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=40)
_REPLACE = re.compile(r"replace\(")
_LITERAL = r"'((?:[^']|'')*)'"
_PAIR = re.compile(rf", {_LITERAL}, {_LITERAL}\)")


def evaluate(expression: str, value: str) -> str:
    """Apply a ``replace(replace(x, 'a', 'b'), 'c', 'd')`` chain the way Azure Pipelines evaluates it."""
    depth = len(_REPLACE.findall(expression))
    pairs = _PAIR.findall(expression)
    assert len(pairs) == depth, "every replace() has exactly one literal pair"
    for old, new in pairs:  # innermost call first, as written left to right
        value = value.replace(old.replace("''", "'"), new.replace("''", "'"))
    return value


@given(ASCII_NAMES)
def test_the_template_expression_computes_the_same_id(name: str) -> None:
    assert f"deploy_production_{evaluate(stage_id_expression(), name)}" == stage_id("production", name)


@given(ASCII_NAMES)
def test_ids_hold_only_the_characters_azure_devops_allows(name: str) -> None:
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stage_id("staging", name))


@given(ASCII_NAMES, ASCII_NAMES)
def test_different_models_never_share_a_lock(first: str, second: str) -> None:
    if first != second:
        assert stage_id("production", first) != stage_id("production", second)


def test_look_alike_names_get_different_locks() -> None:
    ids = {stage_id("production", n) for n in ("wine-quality", "wine_quality", "wine.quality", "wine_2Dquality")}
    assert len(ids) == 4


def test_unity_catalog_names_stay_readable() -> None:
    assert stage_id("production", "main.ml.wine") == "deploy_production_main_2Eml_2Ewine"

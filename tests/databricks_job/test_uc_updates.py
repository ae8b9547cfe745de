"""The batch a model update trigger passes: parsed in order, each update named in errors."""

from __future__ import annotations

import pytest

from databricks_job.errors import ParameterError
from databricks_job.uc_updates import ModelUpdate, distinct_updates, parse_model_updates


class TestParseModelUpdates:
    """``{{job.trigger.model.updates}}``: one object per update, fields by trigger condition."""

    def test_each_condition_maps_to_the_event_an_mlflow_server_sends(self) -> None:
        updates = parse_model_updates(
            '[{"full_name": "main.ml.wine", "version": 3, "alias_name": "champion"},'
            ' {"full_name": "main.ml.wine", "version": "4"},'
            ' {"full_name": "main.ml.beer"}]'
        )
        assert updates == [
            ModelUpdate("main.ml.wine", "3", "champion"),
            ModelUpdate("main.ml.wine", "4"),
            ModelUpdate("main.ml.beer"),
        ]
        assert [u.event for u in updates] == [
            "model_version_alias.created",
            "model_version.created",
            "registered_model.created",
        ]
        assert updates[0].describe() == "name=main.ml.wine version=3 alias=champion"

    def test_empty_fields_count_as_absent(self) -> None:
        assert parse_model_updates('[{"full_name": "a.b.c", "version": "", "alias_name": null}]') == [
            ModelUpdate("a.b.c")
        ]

    def test_an_empty_batch_is_an_empty_list(self) -> None:
        assert parse_model_updates("[]") == []

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("{{job.trigger.model.updates}}", "not JSON"),
            ('{"full_name": "a.b.c"}', "JSON list"),
            ('[{"full_name": "a.b.c"}, "a.b.d"]', "update #2 is not a JSON object"),
            ('[{"full_name": "a.b.c"}, {"version": 2}]', "update #2 has no 'full_name'"),
            ('[{"full_name": "a.b.c", "version": true}]', "update #1 field 'version'"),
            ('[{"full_name": ["a"]}]', "update #1 field 'full_name'"),
        ],
    )
    def test_a_malformed_batch_names_what_is_wrong(self, text: str, message: str) -> None:
        with pytest.raises(ParameterError, match=message):
            parse_model_updates(text)


def test_an_update_listed_twice_in_one_batch_is_kept_once_in_order() -> None:
    a, b = ModelUpdate("a.b.c", "1", "champion"), ModelUpdate("a.b.c", "2", "champion")
    assert distinct_updates([a, b, a]) == [a, b]

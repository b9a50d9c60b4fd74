"""The root schema and every chart schema share one set of definitions (schema/definitions)."""

from __future__ import annotations

import json
import sys

import jsonschema
import pytest
import yaml

from harness import paths

sys.path.insert(0, str(paths.REPO / "tools"))
import sync_schemas

ROOT_SCHEMA = json.loads((paths.REPO / "values.schema.json").read_text())


def test_generated_schemas_are_up_to_date():
    stale = [
        str(p.relative_to(paths.REPO))
        for p, text in sync_schemas.planned().items()
        if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"run `python3 tools/sync_schemas.py`; stale: {stale}"


def test_every_chart_but_the_app_of_apps_takes_the_catalog():
    assert {c.name for c in paths.application_charts()} - {c.name for c in paths.catalog_charts()} == {"argocd"}


@pytest.mark.parametrize("chart", paths.catalog_charts(), ids=lambda p: p.name)
def test_chart_schema_uses_the_root_definitions(chart):
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name, definition in ROOT_SCHEMA["definitions"].items():
        assert schema["definitions"].get(name) == definition, f"{chart.name}: definitions.{name} differs"
    assert schema["properties"]["models"] == {"$ref": "#/definitions/models"}
    assert schema["properties"]["global"] == {"$ref": "#/definitions/global"}


def test_shared_model_list_matches_the_root_schema():
    jsonschema.Draft7Validator.check_schema(ROOT_SCHEMA)
    jsonschema.validate(yaml.safe_load((paths.REPO / "models.yaml").read_text()), ROOT_SCHEMA)


@pytest.mark.parametrize(
    "entry, error",
    [
        ({"modelName": "Bad_Name", "huggingfaceId": "org/m"}, "does not match"),
        ({"modelName": "m", "gguf": "m.gguf", "huggingfaceId": "org/m"}, "huggingfaceId"),
        ({"modelName": "m", "huggingfaceId": "org/m", "contextSize": 4096}, "contextSize"),
        ({"huggingfaceId": "org/m"}, "modelName"),
    ],
)
def test_root_schema_rejects_bad_entries(entry, error):
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate({"models": [entry]}, ROOT_SCHEMA)
    assert error in str(err.value)

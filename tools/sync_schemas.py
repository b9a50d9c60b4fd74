#!/usr/bin/env python3
"""Write the shared model-catalog definitions into every schema that uses them.

The one source is schema/definitions/*.json. This writes:
  - values.schema.json at the repository root (the schema of models.yaml), and
  - the `definitions` of every chart's values.schema.json whose chart takes the
    catalog keys (`models`, `global`): each chart keeps its own properties, and
    those two always refer to the shared definitions ("$ref": "#/definitions/...").
The charts are the ones of tests/harness/paths.py (charts/* and the top-level
argocd/, istio/, gateway-api/).

    python3 tools/sync_schemas.py          # rewrite
    python3 tools/sync_schemas.py --check  # exit 1 and name the stale files
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from harness import paths  # noqa: E402  (the one list of charts)

DRAFT = "http://json-schema.org/draft-07/schema#"
LIBRARY_KEY = {"description": "Set by Helm for the model-catalog library chart; holds nothing.", "type": "object"}
CATALOG_KEYS = ("models", "global")


def shared_definitions() -> dict:
    merged: dict = {}
    for path in sorted((REPO / "schema" / "definitions").glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if key in merged:
                raise SystemExit(f"{path.name}: definition {key!r} is defined twice")
            merged[key] = value
    return dict(sorted(merged.items()))


def root_schema(defs: dict) -> dict:
    return {
        "$schema": DRAFT,
        "title": "Shared model catalog (models.yaml): read by every chart of the stack",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "models": {"$ref": "#/definitions/models"},
            "global": {"$ref": "#/definitions/global"},
        },
        "definitions": defs,
    }


def chart_schemas() -> list[Path]:
    """The schemas of the charts that take the catalog keys."""
    return [chart / "values.schema.json" for chart in paths.catalog_charts()]


def _uses_library(chart: Path) -> bool:
    """Whether Chart.yaml lists model-catalog as a dependency (read as text: no PyYAML needed)."""
    return bool(re.search(r"^\s*-\s*name:\s*model-catalog\s*$", (chart / "Chart.yaml").read_text(), re.M))


def with_shared(schema: dict, defs: dict, chart: Path) -> dict:
    out = dict(schema)
    own = {k: v for k, v in schema.get("definitions", {}).items() if k not in defs}
    out["definitions"] = dict(sorted({**own, **defs}.items()))
    props = dict(schema.get("properties", {}))
    for key in CATALOG_KEYS:
        if key in props:
            props[key] = {"$ref": f"#/definitions/{key}"}  # one vocabulary: never a chart's own copy
    if _uses_library(chart):
        # Helm adds a (empty) values key for every dependency, the library chart included.
        props["model-catalog"] = LIBRARY_KEY
    out["properties"] = props
    return out


def dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def planned() -> dict[Path, str]:
    defs = shared_definitions()
    files = {REPO / "values.schema.json": dump(root_schema(defs))}
    for path in chart_schemas():
        files[path] = dump(with_shared(json.loads(path.read_text()), defs, path.parent))
    return files


def main(argv: list[str]) -> int:
    stale = [p for p, text in planned().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"stale: {p.relative_to(REPO)} (run: python3 tools/sync_schemas.py)")
        return 1 if stale else 0
    for path, text in planned().items():
        if path in stale:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

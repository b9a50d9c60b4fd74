#!/usr/bin/env python3
"""Write the shared model-catalog definitions into every schema that uses them.

The one source is schema/definitions/*.json. This writes:
  - values.schema.json at the repository root (the schema of models.yaml), and
  - the `definitions` of every chart's values.schema.json (each chart keeps its
    own properties and refers to the shared ones with "$ref": "#/definitions/...").

    python3 tools/sync_schemas.py          # rewrite
    python3 tools/sync_schemas.py --check  # exit 1 and name the stale files
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DRAFT = "http://json-schema.org/draft-07/schema#"
LIBRARY_KEY = {"description": "Set by Helm for the model-catalog library chart; holds nothing.", "type": "object"}


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
    return sorted(p for p in (REPO / "charts").glob("*/values.schema.json"))


def with_shared(schema: dict, defs: dict) -> dict:
    out = dict(schema)
    own = {k: v for k, v in schema.get("definitions", {}).items() if k not in defs}
    out["definitions"] = dict(sorted({**own, **defs}.items()))
    # Helm adds a (empty) values key for every dependency, the library chart included.
    out["properties"] = {**schema.get("properties", {}), "model-catalog": LIBRARY_KEY}
    return out


def dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def planned() -> dict[Path, str]:
    defs = shared_definitions()
    files = {REPO / "values.schema.json": dump(root_schema(defs))}
    for path in chart_schemas():
        files[path] = dump(with_shared(json.loads(path.read_text()), defs))
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

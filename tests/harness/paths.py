"""Where things are: the repository's folders, the one list of its charts, the third-party CRDs.

noxfile.py imports this module too (lint, docs), so it must stay free of third-party imports.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
TESTS = REPO / "tests"
BAD_VALUES = TESTS / "bad-values"
BUILD = REPO / "build"

# Charts at the top level, where docs/gitops.md and the Argo CD Applications point: the app of
# apps and the two exposure charts. They render custom resources only (no pods).
TOP_LEVEL_CHARTS = ("argocd", "istio", "gateway-api")
# Library charts render nothing on their own; they are exercised through the others.
LIBRARY_CHARTS = ("model-catalog",)


def charts() -> list[Path]:
    """Every chart of the repository, library charts included: what ct lint, yamllint, helm-docs
    and the changelog check go over."""
    return sorted(p.parent for p in CHARTS.glob("*/Chart.yaml")) + [REPO / d for d in TOP_LEVEL_CHARTS]


def application_charts() -> list[Path]:
    """Every chart that renders objects: the generic render rules (tests/unit/test_charts.py) apply."""
    return [c for c in charts() if c.name not in LIBRARY_CHARTS]


def workload_charts() -> list[Path]:
    """The application charts under charts/: they run pods (pod security, secret hygiene, helm tests)."""
    return [c for c in application_charts() if c.parent == CHARTS]


def catalog_charts() -> list[Path]:
    """The application charts that take the shared catalog (`models`, `global` of models.yaml):
    all but the app of apps, which hands models.yaml to its Applications instead."""
    return [
        c
        for c in application_charts()
        if "models" in json.loads((c / "values.schema.json").read_text()).get("properties", {})
    ]


def ci_values_files() -> list[Path]:
    """Every <chart>/ci/*-values.yaml of every application chart."""
    return sorted(p for chart in application_charts() for p in (chart / "ci").glob("*-values.yaml"))


def crds_dir() -> Path:
    """Third-party CRD files: the ones pinned in tools/versions.json, fetched into the tools folder
    on first use; or the folder LLM_CHARTS_CRDS_DIR names. Raises tools.ToolError when neither is there."""
    from . import tools  # late: tools imports this module

    return tools.crds_dir()

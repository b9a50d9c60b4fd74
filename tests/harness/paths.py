"""Where things are. Only the CRD folder lies outside the repository, and it is a setting."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
TESTS = REPO / "tests"
BAD_VALUES = TESTS / "bad-values"
BUILD = REPO / "build"

# Library charts render nothing on their own; they are exercised through the others.
LIBRARY_CHARTS = ("model-catalog",)


def application_charts() -> list[Path]:
    return sorted(p.parent for p in CHARTS.glob("*/Chart.yaml") if p.parent.name not in LIBRARY_CHARTS)


def ci_values_files() -> list[Path]:
    """Every charts/<chart>/ci/*-values.yaml."""
    return sorted(p for chart in application_charts() for p in (chart / "ci").glob("*-values.yaml"))


def crds_dir() -> Path:
    """Third-party CRD schemas. Setting: LLM_CHARTS_CRDS_DIR (default: ../shared/crds beside the repo)."""
    return Path(os.environ.get("LLM_CHARTS_CRDS_DIR", REPO.parent / "shared" / "crds")).resolve()

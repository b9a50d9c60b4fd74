"""Pinned external tools, built on first use by tools/bootstrap.py."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from .paths import REPO

sys.path.insert(0, str(REPO / "tools"))
import bootstrap

ToolError = bootstrap.ToolError


@functools.cache
def tool(name: str) -> Path:
    """Path to helm, helm4, ct or helm-docs at the pinned version."""
    return bootstrap.go_tool(name)


def ct_config_dir() -> Path:
    return bootstrap.ct_config_dir()


def crds_dir() -> Path:
    """The CRD folder (bootstrap.crds_dir: LLM_CHARTS_CRDS_DIR, else the pinned CRDs)."""
    return bootstrap.crds_dir()

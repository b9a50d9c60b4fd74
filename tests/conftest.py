"""Shared pytest setup: the harness package is importable as `harness`; the shell tools fixture."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def shell_tools():
    """curl and sha256sum, which the charts' shell scripts (fetch, helm test) run: a test that
    runs those scripts fails without them, never skips."""
    missing = [t for t in ("curl", "sha256sum") if not shutil.which(t)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install them (Debian: apt-get install curl coreutils)", pytrace=False
        )

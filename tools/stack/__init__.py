"""The stack on a real cluster, for the e2e suite (tests/e2e) and the demo (tools/demo.py).

Modules: images (docker builds of images/*), providers (an existing cluster, kind, or the local
cluster of tools/localcluster), models (the model list and the tiny stand-in models), install
(the charts installed with Helm, real engines). values/ holds the per-chart values that size the
stack for a CPU-only machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TOOLS = str(Path(__file__).resolve().parent.parent)
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

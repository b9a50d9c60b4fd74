"""Build the e2e's cached Go programs ahead: Argo CD and Traefik (tools/versions.json entries
marked "cache") and KEDA (tools/stack/keda.py), one after the other, each a no-op once built.

`.ci/run` starts it in the background, niced, while the test sessions run (they leave a core
mostly idle), and waits for it before `nox -s e2e`, so the e2e never starts a second build of
the same program; if it fails, the e2e builds what is missing itself.

    python3 tools/stack/prebuild.py    # needs PyYAML (tools/stack/requirements.txt)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: bootstrap, localcluster, stack

import bootstrap
from stack import keda


def main() -> int:
    for name, tool in bootstrap.VERSIONS["go"].items():
        if tool.get("cache"):
            started = time.monotonic()
            path = bootstrap.go_tool(name)
            print(f"[prebuild] {name}: {path} ({time.monotonic() - started:.0f} s)", flush=True)
    started = time.monotonic()
    built = keda.build()
    print(f"[prebuild] keda: {sorted(str(p) for p in built.values())} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

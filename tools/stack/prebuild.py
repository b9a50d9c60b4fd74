"""Build ahead what the e2e builds on a cold machine, in the order it needs it: the local cluster's
binaries (Kubernetes, CoreDNS, kube-router) beside the stack's images, then KEDA, then the cached
Go programs of tools/versions.json (Traefik, Argo CD). Each is a no-op once built.

`.ci/run` starts it in the background, niced, as the test sessions start: it takes the CPU they
leave idle, and the e2e that starts later does not wait for it. Both take one lock per program
or image (progress.exclusive): whichever comes second waits for the build in progress and uses
it, so nothing is built twice. If a step fails here, the e2e builds it and says why.

    python3 tools/stack/prebuild.py    # root on Debian; needs PyYAML (tools/stack/requirements.txt)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: bootstrap, localcluster, stack

import localcluster.artifacts

import bootstrap
from stack import images, install, keda


def _timed(name: str, build: Callable[[], object]) -> bool:
    started = time.monotonic()
    try:
        build()
    except Exception:
        print(f"[prebuild] {name}: FAILED after {time.monotonic() - started:.0f} s", flush=True)
        traceback.print_exc()
        return False
    print(f"[prebuild] {name}: ready ({time.monotonic() - started:.0f} s)", flush=True)
    return True


def main() -> int:
    # Run under setsid (as .ci/run does), this is a scheduling group of its own where the kernel
    # groups by session (autogroup, sched(7)), and nice only counts inside a group: give the
    # group this process's nice, so the prebuild yields to the test sessions.
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(os.nice(0)))
    ok = _timed("Debian packages", localcluster.artifacts.preflight)
    # The cluster's three Go builds and the image builds (mostly downloads) overlap, as in the e2e.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = [
            pool.submit(_timed, "cluster binaries", localcluster.artifacts.ensure_all),
            pool.submit(_timed, "images", lambda: images.build_many(install.needed_images())),
        ]
        ok = all([f.result() for f in first]) and ok
    ok = _timed("KEDA", keda.build) and ok
    for name, tool in bootstrap.VERSIONS["go"].items():
        if tool.get("cache"):
            ok = _timed(name, functools.partial(bootstrap.go_tool, name)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

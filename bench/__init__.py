"""Gateway benchmark (issue 9): `nox -s bench`, or `python -m bench.run` from the repo root.

The benchmark drives the gateway with the gateway test suite's own pieces (tests/gateway: the
chart-rendering runner, the mock backends, the timestamping HTTP client) and installs Debian
packages through tools/bootstrap.py. Both folders go on sys.path here, once, before any bench
module is imported, so every module can import them at the top.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _folder in (REPO / "tools", REPO / "tests"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

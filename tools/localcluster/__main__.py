"""python3 tools/localcluster up|down|delete|status  (or python3 -m localcluster with tools/ on the path)"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "localcluster"

try:
    import localcluster
except ValueError as exc:  # a bad setting (settings.SettingError), named with its fix
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)

USAGE = """usage: python3 tools/localcluster COMMAND
  up       build what is missing and start the cluster (prints the kubeconfig)
  down     stop it (state kept: the next `up` resumes it)
  delete   stop it and delete its state (etcd, kubelet, PVC data); binaries and images stay
  status   which processes run"""


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    try:
        if cmd == "up":
            print(localcluster.up())
        elif cmd in ("down", "delete"):
            localcluster.down(delete=cmd == "delete")
        elif cmd == "status":
            print(localcluster.status())
        else:
            print(USAGE)
            return 2
    except (localcluster.ClusterError, localcluster.settings.SettingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv[1:]))

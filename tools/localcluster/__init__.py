"""A real single-node Kubernetes cluster on this machine, built from package registries only.

For machines that reach package registries but no container registry (so no kind node image):
- Kubernetes server binaries built from the Go module proxy (`k8s.io/kubernetes`, staging
  modules replaced by their published `k8s.io/X v0.N.M`), cached under $LLM_CHARTS_CACHE;
- etcd and containerd (with its CRI plugin) from Debian trixie packages, unpacked, not installed;
- CNI bridge + host-local + portmap (Debian containernetworking-plugins), kube-proxy (iptables);
- CoreDNS (Go module proxy, only the plugins its Corefile uses) as a host process behind the usual kube-dns Service;
- kube-router (Go module proxy), its firewall only, as the host process that enforces NetworkPolicies;
- the in-tree hostPath provisioner behind a default StorageClass;
- a pause image compiled from the Kubernetes tree, imported without docker.
Control plane processes run on the host, detached, with pid files and logs under
$LLM_CHARTS_CACHE/cluster; they outlive the run that started them until `down()`.
The node, pod and Service address ranges are settings (settings.py), by default inside
198.18.0.0/15, a range reserved for test networks.

Modules, one concern each: settings (environment, paths), artifacts (build and fetch), config
(certificates, component configs), processes (start, stop, health), network (host networking),
containerd (images), cluster (up, down, status).
Needs root on Debian (or Ubuntu) with apt, and Go >= the version Kubernetes asks for.
CLI: python3 tools/localcluster up|down|delete|status
"""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helpers (progress, debpkgs) are top-level modules in tools/.
_TOOLS = str(Path(__file__).resolve().parent.parent)
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

from . import settings  # noqa: E402
from .artifacts import ClusterError  # noqa: E402
from .cluster import down, running, status, up  # noqa: E402
from .containerd import import_archive, normalize, present, write_docker_archive  # noqa: E402
from .settings import CACHE, K8S_VERSION, KUBECONFIG, LOGS  # noqa: E402

__all__ = [
    "CACHE",
    "ClusterError",
    "K8S_VERSION",
    "KUBECONFIG",
    "LOGS",
    "down",
    "import_archive",
    "normalize",
    "present",
    "running",
    "settings",
    "status",
    "up",
    "write_docker_archive",
]

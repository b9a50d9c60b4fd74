"""Settings of the local cluster (environment variables, read once) and the paths derived from them.

| variable | default | meaning |
|---|---|---|
| LLM_CHARTS_CACHE | ~/.cache/llm-charts | built binaries, images, the cluster's state |
| LLM_CHARTS_K8S_VERSION | v1.34.4 | Kubernetes release built from the Go module proxy |
| LLM_CHARTS_NODE_CIDR | 198.18.0.0/24 | the node's own network: its address is the first one, on a dummy interface |
| LLM_CHARTS_POD_CIDR | 198.18.128.0/17 | pod addresses (the bridge llmcni0) |
| LLM_CHARTS_SERVICE_CIDR | 198.19.0.0/16 | Service ClusterIPs (.1 the API server, .10 DNS) |

The address defaults lie in 198.18.0.0/15, which RFC 2544 reserves for benchmark test networks:
no company LAN, VPN or cloud VPC uses it, so the cluster's routes never shadow a real network.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


class SettingError(ValueError):
    pass


def _network(var: str, default: str) -> ipaddress.IPv4Network:
    value = os.environ.get(var) or default
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise SettingError(
            f"{var}={value!r} is not an IPv4 network in CIDR form ({exc}); e.g. {var}={default}"
        ) from None
    return net


CACHE = Path(os.environ.get("LLM_CHARTS_CACHE") or Path.home() / ".cache" / "llm-charts").expanduser()
K8S_VERSION = os.environ.get("LLM_CHARTS_K8S_VERSION", "v1.34.4")
NODE_CIDR = _network("LLM_CHARTS_NODE_CIDR", "198.18.0.0/24")
POD_CIDR = _network("LLM_CHARTS_POD_CIDR", "198.18.128.0/17")
SERVICE_CIDR = _network("LLM_CHARTS_SERVICE_CIDR", "198.19.0.0/16")


def _check_ranges() -> None:
    nets = {"LLM_CHARTS_NODE_CIDR": NODE_CIDR, "LLM_CHARTS_POD_CIDR": POD_CIDR, "LLM_CHARTS_SERVICE_CIDR": SERVICE_CIDR}
    names = list(nets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if nets[a].overlaps(nets[b]):
                raise SettingError(f"{a}={nets[a]} overlaps {b}={nets[b]}: the three ranges must be disjoint")
    if NODE_CIDR.num_addresses < 4:
        raise SettingError(f"LLM_CHARTS_NODE_CIDR={NODE_CIDR}: too small, use a /30 or larger")
    if POD_CIDR.prefixlen > 24:
        raise SettingError(f"LLM_CHARTS_POD_CIDR={POD_CIDR}: too small for a node's pods, use a /24 or larger")
    if SERVICE_CIDR.prefixlen < 12 or SERVICE_CIDR.prefixlen > 28:
        raise SettingError(f"LLM_CHARTS_SERVICE_CIDR={SERVICE_CIDR}: kube-apiserver takes a /12 to /28")


_check_ranges()

NODE_IP = str(NODE_CIDR[1])
API_SERVICE_IP = str(SERVICE_CIDR[1])
DNS_SERVICE_IP = str(SERVICE_CIDR[10])

COREDNS_VERSION = "v1.14.7"
# The newest kube-router release the Go module proxy serves here (v2.2+ answer 403).
KUBE_ROUTER_VERSION = "v2.1.0"
PAUSE_VERSION = "3.10.1"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"

STATE = CACHE / "cluster"
LOGS = STATE / "logs"
RUN = Path("/run/llm-charts")
KUBECONFIG = STATE / "admin.kubeconfig"
NODE_NAME = "llm-charts"
BRIDGE = "llmcni0"
NODE_LINK = "llmnode0"  # dummy interface that holds NODE_IP
ETCD_PORT = 23790
API_PORT = 6443
KUBE_ROUTER_HEALTH_PORT = 20244
CNI_BIN = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
TRIXIE = CACHE / "apt-trixie"
TRIXIE_BIN = TRIXIE / "root" / "usr" / "bin"
K8S_BIN = CACHE / f"k8s-{K8S_VERSION}" / "bin"
K8S_SRC = CACHE / "src" / f"kubernetes-{K8S_VERSION}"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
COREDNS = CACHE / "bin" / f"coredns-{COREDNS_VERSION}"
RUNC_WRAPPER = CACHE / "bin" / "runc-wrapper"
KUBE_ROUTER = CACHE / "bin" / f"kube-router-{KUBE_ROUTER_VERSION}"
COREDNS_SRC = CACHE / "src" / f"coredns-{COREDNS_VERSION}"
KUBE_ROUTER_SRC = CACHE / "src" / f"kube-router-{KUBE_ROUTER_VERSION}"
CONTAINERD_SOCK = RUN / "containerd" / "containerd.sock"
# What this state was made with; a start with other ranges must delete it first.
NETWORK_STAMP = STATE / "network.json"


def network() -> dict[str, str]:
    return {"node": str(NODE_CIDR), "pods": str(POD_CIDR), "services": str(SERVICE_CIDR)}

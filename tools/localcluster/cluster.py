"""Start, stop and inspect the local cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import progress
from progress import say, step

from . import artifacts, config, containerd, network
from .artifacts import ClusterError
from .processes import alive, components, http_ok, kubectl, log_tail, pidfile, start, stop, wait_ready
from .settings import (
    API_PORT,
    CACHE,
    DNS_SERVICE_IP,
    K8S_VERSION,
    KUBECONFIG,
    LOGS,
    NETWORK_STAMP,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    RUN,
    STATE,
)
from .settings import network as network_settings

# Ranges of a state written before they were settings (no stamp).
_LEGACY_NETWORK = {"node": "", "pods": "10.244.0.0/16", "services": "10.96.0.0/16"}


def _state_network() -> dict[str, str] | None:
    """The ranges the existing cluster state was made with, None without state."""
    if NETWORK_STAMP.exists():
        return json.loads(NETWORK_STAMP.read_text())
    if (STATE / "etcd").exists():
        return _LEGACY_NETWORK
    return None


def _check_network() -> None:
    made = _state_network()
    if made is not None and made != network_settings():
        raise ClusterError(
            f"the cluster state under {STATE} was made with node/pod/Service ranges {made}, the settings "
            f"now say {network_settings()} (LLM_CHARTS_NODE_CIDR, LLM_CHARTS_POD_CIDR, LLM_CHARTS_SERVICE_CIDR): "
            "delete it first (`python3 tools/localcluster delete` or `nox -s down`), or restore the settings"
        )


def _bootstrap_objects() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "standard",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/host-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                },
                "spec": {
                    "clusterIP": DNS_SERVICE_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
            # CoreDNS runs on the host: the Service has no selector, this slice points at the node.
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-host",
                    "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "llm-charts-e2e",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ],
    }
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=llm-charts-e2e",
        "-f",
        "-",
        input=json.dumps(manifest),
    )


def _node_ready() -> bool:
    out = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conds = {c["type"]: c["status"] for c in json.loads(out.stdout)["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def running() -> bool:
    """True when every component runs and the node is Ready (then `up()` only checks)."""
    if not KUBECONFIG.exists() or os.geteuid() != 0:
        return False
    return (
        all(alive(name, argv[0]) for name, argv, *_ in components({}))
        and http_ok(f"https://127.0.0.1:{API_PORT}/readyz", client_cert=True)
        and _node_ready()
    )


def up() -> Path:
    """Build what is missing, start what is not running, wait for a Ready node. Returns the kubeconfig."""
    LOGS.mkdir(parents=True, exist_ok=True)
    if running():
        say(f"local cluster already running (kubeconfig {KUBECONFIG})")
        return KUBECONFIG
    _check_network()
    pause = artifacts.ensure_all()
    with step(f"start the local cluster (Kubernetes {K8S_VERSION}, node {NODE_NAME} at {NODE_IP}, pods {POD_CIDR})"):
        certs = config.write()
        NETWORK_STAMP.write_text(json.dumps(network_settings()))
        network.setup()
        for name, argv, env, what, check in components(certs):
            if name == "kubelet" and not containerd.present(PAUSE_IMAGE):
                containerd.import_archive(pause)
            if name == "coredns":
                _bootstrap_objects()
            start(name, argv, env)
            wait_ready(name, what, check)
        progress.wait_for(f"node {NODE_NAME} Ready", _node_ready, timeout=120, detail=lambda: log_tail("kubelet", 30))
        progress.wait_for(
            "default ServiceAccount",
            lambda: kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            timeout=60,
        )
    return KUBECONFIG


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m == str(root) or m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def down(delete: bool = False) -> None:
    """Stop every component and remove the pods' containers and network; with `delete`, also
    the cluster's state (etcd data, kubelet dir, PVC data). Built binaries and loaded images are kept."""
    if not STATE.exists() and not any(pidfile(n).exists() for n in ("etcd", "kubelet", "containerd")):
        say(f"no local cluster under {STATE}")
        return
    binaries = {name: argv[0] for name, argv, *_ in components({})}
    with step("stop the local cluster" + (" and delete its state" if delete else "")):
        for name in reversed(binaries):
            if name not in ("containerd", "etcd", "kube-apiserver"):
                stop(name, binaries[name])
        if alive("containerd", binaries["containerd"]):
            # Pod containers outlive containerd (their shims keep them): remove them first.
            tasks = containerd.ctr("tasks", "ls", "-q").stdout.decode().split()
            if tasks:
                containerd.ctr("tasks", "delete", "--force", *tasks)
            ids = containerd.ctr("containers", "ls", "-q").stdout.decode().split()
            if ids:
                containerd.ctr("containers", "delete", *ids)
        for name in ("containerd", "kube-apiserver", "etcd"):
            stop(name, binaries[name])
        made = _state_network() or {}
        network.teardown(sorted({str(POD_CIDR), made.get("pods") or str(POD_CIDR)}))
        _unmount_under(STATE / "kubelet")
        _unmount_under(RUN)
        if delete:
            for d in ("etcd", "kubelet", "cni/ipam"):
                shutil.rmtree(STATE / d, ignore_errors=True)
            NETWORK_STAMP.unlink(missing_ok=True)
            shutil.rmtree("/tmp/hostpath_pv", ignore_errors=True)


def status() -> str:
    lines = [
        f"Kubernetes {K8S_VERSION}, cache {CACHE}, kubeconfig {KUBECONFIG}",
        f"  node {NODE_NAME} {NODE_IP}, ranges {network_settings()}",
    ]
    for name, argv, *_ in components({}):
        pid = alive(name, argv[0])
        lines.append(f"  {name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return "\n".join(lines)


__all__ = ["ClusterError", "down", "running", "status", "up"]

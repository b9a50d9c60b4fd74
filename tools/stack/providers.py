"""Where the e2e suite gets its cluster, in this order:

1. an existing cluster the user names: LLM_CHARTS_KUBECONFIG (and/or LLM_CHARTS_KUBE_CONTEXT,
   pytest --kube-context) - used as it is, never created or deleted;
2. kind, when `kind` is on PATH and a kindest/node image is already in docker (no pull);
3. the local single-node cluster of tools/localcluster (root on Debian).
LLM_CHARTS_PROVIDER=existing|kind|local forces one.

A cluster that was already running is reused and left running; one created by this run is
deleted at the end unless kept (LLM_CHARTS_KEEP_CLUSTER=1, pytest --keep-cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import localcluster
from progress import say, step

from . import images

KIND_CLUSTER = os.environ.get("LLM_CHARTS_KIND_CLUSTER", "llm-charts")


class Cluster:
    """A cluster the suite can use: kubectl/helm arguments, image loading, reaching a Service."""

    provider = "existing"

    def __init__(self, kubeconfig: Path | None, context: str | None = None):
        self.kubeconfig = kubeconfig
        self.context = context
        self.created = False  # created by this run (so deleted at the end unless kept)

    # -- clients -----------------------------------------------------------------------------
    def kube_args(self) -> list[str]:
        args = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        return args + ([f"--kube-context={self.context}"] if self.context else [])

    def kubectl_args(self) -> list[str]:
        args = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        return args + ([f"--context={self.context}"] if self.context else [])

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["kubectl", *self.kubectl_args(), *args], input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def server_version(self) -> str:
        return self.kubectl_json("version")["serverVersion"]["gitVersion"]

    def describe(self) -> str:
        where = f"kubeconfig {self.kubeconfig or '(default)'}" + (f", context {self.context}" if self.context else "")
        return f"{self.provider} cluster ({where})"

    # -- images ------------------------------------------------------------------------------
    def load_image(self, ref: str) -> str:
        """Make a locally built image available to the nodes; returns the reference pods use."""
        registry = os.environ.get("LLM_CHARTS_IMAGE_REGISTRY")
        if not registry:
            say(f"  {ref}: existing cluster and no LLM_CHARTS_IMAGE_REGISTRY; assuming the nodes have it")
            return ref
        target = f"{registry.rstrip('/')}/{ref}"
        images.docker("tag", ref, target)
        images.docker("push", target)
        return target

    # -- reaching Services -------------------------------------------------------------------
    def service_url(self, namespace: str, service: str, port: int) -> contextlib.AbstractContextManager[str]:
        """A base URL on this host that reaches the Service (kubectl port-forward by default)."""
        return self._port_forward(namespace, f"svc/{service}", port)

    def pod_url(self, namespace: str, pod: dict, port: int) -> contextlib.AbstractContextManager[str]:
        """A base URL on this host that reaches one pod (a Service reaches any one of its pods)."""
        return self._port_forward(namespace, f"pod/{pod['metadata']['name']}", port)

    @contextlib.contextmanager
    def _port_forward(self, namespace: str, target: str, port: int) -> Iterator[str]:
        proc = subprocess.Popen(
            ["kubectl", *self.kubectl_args(), "-n", namespace, "port-forward", target, f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 30
            local = None
            while time.monotonic() < deadline and local is None:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
                m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
                local = m.group(1) if m else None
            if local is None:
                raise RuntimeError(f"kubectl port-forward {target} did not start")
            yield f"http://127.0.0.1:{local}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def delete(self) -> None:
        say(f"leaving the {self.describe()} as it is (not created by this run)")


class KindCluster(Cluster):
    provider = "kind"

    @staticmethod
    def available() -> bool:
        return (
            bool(shutil.which("kind") and shutil.which("docker"))
            and images.docker("images", "-q", "kindest/node", check=False).stdout.strip() != ""
        )

    def __init__(self) -> None:
        super().__init__(localcluster.CACHE / "kind.kubeconfig", f"kind-{KIND_CLUSTER}")

    def up(self) -> KindCluster:
        clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True).stdout.split()
        if KIND_CLUSTER not in clusters:
            node = images.docker("images", "kindest/node", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()[0]
            with step(f"kind create cluster --name {KIND_CLUSTER} --image {node}"):
                subprocess.run(
                    [
                        "kind",
                        "create",
                        "cluster",
                        "--name",
                        KIND_CLUSTER,
                        "--image",
                        node,
                        "--kubeconfig",
                        str(self.kubeconfig),
                        "--wait",
                        "120s",
                    ],
                    check=True,
                )
            self.created = True
        else:
            subprocess.run(
                ["kind", "export", "kubeconfig", "--name", KIND_CLUSTER, "--kubeconfig", str(self.kubeconfig)],
                check=True,
                capture_output=True,
            )
        return self

    def load_image(self, ref: str) -> str:
        subprocess.run(["kind", "load", "docker-image", "--name", KIND_CLUSTER, ref], check=True, capture_output=True)
        return ref

    def delete(self) -> None:
        with step(f"kind delete cluster --name {KIND_CLUSTER}"):
            subprocess.run(["kind", "delete", "cluster", "--name", KIND_CLUSTER], check=True)


class LocalCluster(Cluster):
    provider = "local"

    def __init__(self) -> None:
        super().__init__(localcluster.KUBECONFIG, None)

    def up(self) -> LocalCluster:
        was_running = localcluster.KUBECONFIG.exists() and os.geteuid() == 0 and localcluster.running()
        localcluster.up()
        self.created = not was_running
        return self

    def describe(self) -> str:
        return f"local cluster (Kubernetes {localcluster.K8S_VERSION}, kubeconfig {self.kubeconfig})"

    def load_image(self, ref: str) -> str:
        if not localcluster.present(ref):
            with step(f"load {ref} into the cluster's containerd"):
                images.save_into(ref, localcluster.import_archive)
        return ref

    @contextlib.contextmanager
    def service_url(self, namespace: str, service: str, port: int) -> Iterator[str]:
        # kube-proxy runs on this host, so a ClusterIP is reachable directly (no port-forward
        # to re-open when the gateway pod rolls).
        ip = self.kubectl("-n", namespace, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}").stdout
        yield f"http://{ip}:{port}"

    @contextlib.contextmanager
    def pod_url(self, namespace: str, pod: dict, port: int) -> Iterator[str]:
        yield f"http://{pod['status']['podIP']}:{port}"  # pod IPs are routed on this host too

    def delete(self) -> None:
        localcluster.down(delete=True)
        images.stop_docker()

    def stop(self) -> None:
        localcluster.down(delete=False)
        images.stop_docker()


def select(kubeconfig: str | None = None, context: str | None = None, provider: str | None = None) -> Cluster:
    """The cluster to use (not yet started)."""
    kubeconfig = kubeconfig or os.environ.get("LLM_CHARTS_KUBECONFIG")
    context = context or os.environ.get("LLM_CHARTS_KUBE_CONTEXT")
    provider = provider or os.environ.get("LLM_CHARTS_PROVIDER")
    if provider == "existing" or (provider is None and (kubeconfig or context)):
        return Cluster(Path(kubeconfig).expanduser() if kubeconfig else None, context)
    if provider == "kind" or (provider is None and KindCluster.available()):
        return KindCluster()
    if provider in (None, "local"):
        return LocalCluster()
    raise ValueError(f"LLM_CHARTS_PROVIDER={provider!r}: expected existing, kind or local")


def up(cluster: Cluster) -> Cluster:
    if isinstance(cluster, (KindCluster, LocalCluster)):
        cluster.up()
    say(f"using the {cluster.describe()}, server {cluster.server_version()}")
    return cluster

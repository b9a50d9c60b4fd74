"""The cluster's processes: each runs detached on the host with a pid file under /run/llm-charts
and a log under STATE/logs, and outlives the run that started it until `down`."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import progress
from progress import say

from .config import PKI
from .containerd import ctr
from .settings import (
    API_PORT,
    CONTAINERD_SOCK,
    COREDNS,
    ETCD_PORT,
    K8S_BIN,
    KUBE_ROUTER,
    KUBE_ROUTER_HEALTH_PORT,
    KUBECONFIG,
    LOGS,
    NODE_IP,
    NODE_NAME,
    RUN,
    SERVICE_CIDR,
    STATE,
    TRIXIE_BIN,
)


def pidfile(name: str) -> Path:
    return RUN / f"{name}.pid"


def alive(name: str, binary: Path | str) -> int | None:
    """The pid of our running `name`, checked against its executable (pids are reused)."""
    try:
        pid = int(pidfile(name).read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if Path(exe).name == Path(binary).name else None


def start(name: str, argv: list[str], env: dict | None = None) -> None:
    if alive(name, argv[0]):
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        log.write(f"\n==== {time.ctime()} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    pidfile(name).write_text(str(proc.pid))
    say(f"  started {name} (pid {proc.pid}, log {LOGS / (name + '.log')})")


def renice(name: str, binary: str, nice: int) -> None:
    """Run our daemon `name` at priority `nice` (dockerd takes that of the run using it: niced
    under .ci/run's prebuild, normal in the e2e). It runs in a session of its own, and where the
    kernel groups the scheduling by session (autogroup, sched(7)) a process's nice only counts
    inside its group, so the group's nice is set too."""
    pid = alive(name, binary)
    if not pid:
        return
    for set_nice in (
        lambda: Path(f"/proc/{pid}/autogroup").write_text(str(nice)),
        lambda: os.setpriority(os.PRIO_PROCESS, pid, nice),
    ):
        with contextlib.suppress(OSError):
            set_nice()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def stop(name: str, binary: str) -> None:
    pid = alive(name, binary)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        say(f"  stopped {name} (pid {pid})")
    pidfile(name).unlink(missing_ok=True)


def log_tail(name: str, lines: int = 15) -> str:
    return progress._tail(LOGS / f"{name}.log", lines)


def http_ok(url: str, *, client_cert: bool = False) -> bool:
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
        ctx.check_hostname = False
        if client_cert:
            ctx.load_cert_chain(PKI / "admin.crt", PKI / "admin.key")
        else:
            ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_ready(name: str, what: str, check: Callable[[], object], timeout: float = 120) -> None:
    progress.wait_for(f"{name} ({what})", check, timeout=timeout, detail=lambda: log_tail(name))


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={KUBECONFIG}", *args], input=input, capture_output=True, text=True, check=check
    )


Component = tuple[str, list[str], dict, str, Callable[[], object]]


def components(certs: dict[str, str]) -> list[Component]:
    """(name, argv, env, what is awaited, check) in start order. `certs`: config.write()'s names."""
    path = f"{TRIXIE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = dict(os.environ, PATH=path)
    api = certs.get("apiserver", "apiserver")
    client = certs.get("kubelet-client", "apiserver-kubelet-client")
    return [
        (
            "etcd",
            [
                str(TRIXIE_BIN / "etcd"),
                "--name=llm-charts",
                f"--data-dir={STATE / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--listen-peer-urls=http://127.0.0.1:{ETCD_PORT + 10}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PORT + 10}",
                f"--initial-cluster=llm-charts=http://127.0.0.1:{ETCD_PORT + 10}",
                # a throwaway test store: no fsync keeps a slow shared disk from stalling the API
                "--unsafe-no-fsync",
                "--snapshot-count=10000",
            ],
            env,
            "health",
            lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"),
        ),
        (
            "kube-apiserver",
            [
                str(K8S_BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={PKI / 'ca.crt'}",
                f"--tls-cert-file={PKI / f'{api}.crt'}",
                f"--tls-private-key-file={PKI / f'{api}.key'}",
                f"--kubelet-client-certificate={PKI / f'{client}.crt'}",
                f"--kubelet-client-key={PKI / f'{client}.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-account-key-file={PKI / 'sa.pub'}",
                f"--service-account-signing-key-file={PKI / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            env,
            "/readyz",
            lambda: http_ok(f"https://127.0.0.1:{API_PORT}/readyz", client_cert=True),
        ),
        (
            "kube-controller-manager",
            [
                str(K8S_BIN / "kube-controller-manager"),
                f"--kubeconfig={KUBECONFIG}",
                f"--authentication-kubeconfig={KUBECONFIG}",
                f"--authorization-kubeconfig={KUBECONFIG}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                f"--service-account-private-key-file={PKI / 'sa.key'}",
                f"--root-ca-file={PKI / 'ca.crt'}",
                f"--cluster-signing-cert-file={PKI / 'ca.crt'}",
                f"--cluster-signing-key-file={PKI / 'ca.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # PVCs bind to directories under /tmp/hostpath_pv (test clusters only)
                "--enable-hostpath-provisioner=true",
                "--v=1",
            ],
            env,
            "/healthz",
            lambda: http_ok("https://127.0.0.1:10257/healthz"),
        ),
        (
            "kube-scheduler",
            [
                str(K8S_BIN / "kube-scheduler"),
                f"--kubeconfig={KUBECONFIG}",
                f"--authentication-kubeconfig={KUBECONFIG}",
                f"--authorization-kubeconfig={KUBECONFIG}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--v=1",
            ],
            env,
            "/healthz",
            lambda: http_ok("https://127.0.0.1:10259/healthz"),
        ),
        (
            "containerd",
            [str(TRIXIE_BIN / "containerd"), f"--config={STATE / 'containerd.toml'}"],
            env,
            "socket",
            lambda: CONTAINERD_SOCK.exists() and ctr("version").returncode == 0,
        ),
        (
            "kubelet",
            [
                str(K8S_BIN / "kubelet"),
                f"--config={STATE / 'kubelet.yaml'}",
                f"--kubeconfig={STATE / 'kubelet.kubeconfig'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={STATE / 'kubelet'}",
                "--v=1",
            ],
            env,
            "/healthz",
            lambda: http_ok("http://127.0.0.1:10248/healthz"),
        ),
        (
            "kube-proxy",
            [str(K8S_BIN / "kube-proxy"), f"--config={STATE / 'kube-proxy.yaml'}"],
            env,
            "/healthz",
            lambda: http_ok("http://127.0.0.1:10256/healthz"),
        ),
        # NetworkPolicies: kube-router's firewall only (iptables + ipset on the host); routing and
        # Services stay with the bridge CNI and kube-proxy.
        (
            "kube-router",
            [
                str(KUBE_ROUTER),
                f"--kubeconfig={KUBECONFIG}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
                "--v=1",
            ],
            env,
            "/healthz",
            lambda: http_ok(f"http://127.0.0.1:{KUBE_ROUTER_HEALTH_PORT}/healthz"),
        ),
        (
            "coredns",
            [str(COREDNS), "-conf", str(STATE / "Corefile")],
            env,
            "/ready",
            lambda: http_ok("http://127.0.0.1:18181/ready"),
        ),
    ]

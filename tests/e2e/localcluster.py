"""A real single-node Kubernetes cluster on this machine, built from registry packages only.

For machines that reach package registries but no container registry (so no kind node image):
- Kubernetes server binaries built from the Go module proxy (`k8s.io/kubernetes`, staging
  modules replaced by their published `k8s.io/X v0.N.M`), cached under $LLM_CHARTS_CACHE;
- etcd and containerd (with its CRI plugin) from Debian trixie packages, unpacked, not installed;
- CNI bridge + host-local + portmap (Debian containernetworking-plugins), kube-proxy (iptables);
- CoreDNS (Go module proxy) as a host process behind the usual kube-dns Service 10.96.0.10;
- kube-router (Go module proxy), its firewall only, as the host process that enforces NetworkPolicies;
- the in-tree hostPath provisioner behind a default StorageClass;
- a pause image compiled from the Kubernetes tree, imported without docker.
Control plane processes run on the host, detached, with pid files and logs under
$LLM_CHARTS_CACHE/cluster; they outlive the test run until `down()`.

Needs root on Debian (or Ubuntu) with apt, and Go >= the version Kubernetes asks for.
CLI: python3 tests/e2e/localcluster.py up|down|delete|status
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from e2e import progress  # noqa: E402
    from e2e.progress import say, step  # noqa: E402
else:
    from . import progress
    from .progress import say, step

CACHE = Path(os.environ.get("LLM_CHARTS_CACHE") or Path.home() / ".cache" / "llm-charts").expanduser()
K8S_VERSION = os.environ.get("LLM_CHARTS_K8S_VERSION", "v1.34.4")
COREDNS_VERSION = "v1.14.7"
# The newest kube-router release the Go module proxy serves here (v2.2+ answer 403).
KUBE_ROUTER_VERSION = "v2.1.0"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
STATE = CACHE / "cluster"
LOGS = STATE / "logs"
RUN = Path("/run/llm-charts")
KUBECONFIG = STATE / "admin.kubeconfig"
NODE_NAME = "llm-charts"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
POD_CIDR = "10.244.0.0/16"
BRIDGE = "llmcni0"
ETCD_PORT = 23790
API_PORT = 6443
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
KUBE_ROUTER_SRC = CACHE / "src" / f"kube-router-{KUBE_ROUTER_VERSION}"
KUBE_ROUTER_HEALTH_PORT = 20244
CONTAINERD_SOCK = RUN / "containerd" / "containerd.sock"
# Debian packages the host needs, by the command (or file) that proves each is there.
APT_NEEDS = {
    "iptables": "iptables", "conntrack": "conntrack", "openssl": "openssl", "gcc": "gcc",
    "/usr/include/stdio.h": "libc6-dev", "debootstrap": "debootstrap", "dockerd": "docker.io",
    str(RUNC): "runc", str(CNI_BIN / "bridge"): "containernetworking-plugins", "ip": "iproute2",
    "mount": "mount", "apt-get": "apt", "ipset": "ipset",
}
# What the kubelet sets on every node (it fails to start when it cannot); restored by down().
KERNEL_TUNABLES = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000", "net/ipv4/ip_forward": "1",
                   "net/bridge/bridge-nf-call-iptables": "1"}


class ClusterError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Preflight


def preflight() -> None:
    """Root on Linux with apt; install the Debian packages that are missing."""
    if platform.system() != "Linux":
        raise ClusterError("the local cluster needs Linux (root, Debian/Ubuntu); use kind or an "
                           "existing cluster (LLM_CHARTS_KUBECONFIG) elsewhere")
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (it runs containerd, the kubelet and "
                           "iptables); run as root, or point LLM_CHARTS_KUBECONFIG at a cluster")
    if not shutil.which("go"):
        raise ClusterError("the local cluster builds Kubernetes from the Go module proxy: install Go "
                           "(>= 1.24) and put it on PATH")
    missing = sorted({pkg for need, pkg in APT_NEEDS.items()
                      if not (Path(need).exists() if need.startswith("/") else shutil.which(need))})
    if missing:
        if not shutil.which("apt-get"):
            raise ClusterError(f"missing Debian packages {missing} and no apt-get to install them")
        with step(f"apt-get install {' '.join(missing)}"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            progress.run(["apt-get", "update", "-q"], log=LOGS / "apt.log", env=env)
            progress.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                         log=LOGS / "apt.log", env=env)


# ---------------------------------------------------------------------------------------------
# Artifacts (cached under CACHE; a second run skips all of this)


def _go_env() -> dict:
    return dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")


def ensure_kubernetes() -> None:
    if all((K8S_BIN / b).exists() for b in K8S_BINARIES):
        return
    with step(f"build Kubernetes {K8S_VERSION} server binaries from the Go module proxy "
              "(cold: 15-30 min on 2 cores)"):
        log = LOGS / "build-kubernetes.log"
        if not (K8S_SRC / "go.mod").exists():
            out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
                                 capture_output=True, text=True, check=True, cwd="/")
            src = Path(json.loads(out.stdout)["Dir"])
            tmp = K8S_SRC.with_name(K8S_SRC.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, symlinks=True)
            subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=True)
            # The module zip has no staging/ sources (vendor/ links into them): use the published
            # k8s.io/X v0.N.M modules instead.
            for name in ("vendor", "go.work", "go.work.sum"):
                p = tmp / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            staging = "v0." + K8S_VERSION.split(".", 1)[1]
            gomod = tmp / "go.mod"
            lines = []
            for line in gomod.read_text().splitlines():
                if "=> ./staging/src/" in line:
                    mod = line.split("=>")[0].strip()
                    line = f"\t{mod} => {mod} {staging}"
                lines.append(line)
            gomod.write_text("\n".join(lines) + "\n")
            progress.run(["go", "mod", "download"], log=log, cwd=tmp, env=_go_env(), name="go mod download")
            tmp.rename(K8S_SRC)
        minor = K8S_VERSION.split(".")[1]
        ldflags = " ".join([
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={K8S_VERSION}",
        ])
        K8S_BIN.mkdir(parents=True, exist_ok=True)
        progress.run(["nice", "-n", "10", "go", "build", "-ldflags", ldflags, "-o", f"{K8S_BIN}/",
                      *[f"./cmd/{b}" for b in K8S_BINARIES]],
                     log=log, cwd=K8S_SRC, env=_go_env(), name="go build")


def _trixie_apt(*args: str) -> list[str]:
    return ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={TRIXIE / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null", "-o", f"Dir::State::Lists={TRIXIE / 'lists'}",
            "-o", f"Dir::Cache::Archives={TRIXIE / 'archives'}", *args]


def ensure_trixie_binaries() -> None:
    """etcd 3.5 and containerd 1.7 from Debian trixie (bookworm's are too old for 1.3x), unpacked
    into the cache with dpkg -x; nothing is installed system-wide."""
    needed = ("etcd", "containerd", "containerd-shim-runc-v2", "ctr")
    if all((TRIXIE_BIN / b).exists() for b in needed):
        return
    with step("fetch etcd-server and containerd from Debian trixie (private apt lists)"):
        for d in ("lists/partial", "archives/partial", "root"):
            (TRIXIE / d).mkdir(parents=True, exist_ok=True)
        (TRIXIE / "sources.list").write_text(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            "http://deb.debian.org/debian trixie main\n")
        log = LOGS / "apt-trixie.log"
        progress.run(_trixie_apt("update"), log=log, name="apt-get update (trixie)")
        progress.run(_trixie_apt("download", "etcd-server", "containerd"), log=log,
                     cwd=TRIXIE / "archives", name="apt-get download")
        for deb in sorted((TRIXIE / "archives").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(TRIXIE / "root")], check=True)


def ensure_coredns() -> None:
    if COREDNS.exists():
        return
    with step(f"build CoreDNS {COREDNS_VERSION} from the Go module proxy (cold: 10-30 min on 2 cores)"):
        gobin = CACHE / "gobin"
        progress.run(["nice", "-n", "10", "go", "install", "-ldflags", "-s -w",
                      f"github.com/coredns/coredns@{COREDNS_VERSION}"],
                     log=LOGS / "build-coredns.log", env=dict(_go_env(), GOBIN=str(gobin)),
                     cwd="/", name="go install coredns")
        COREDNS.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(gobin / "coredns"), COREDNS)


def ensure_kube_router() -> None:
    """kube-router, built like Kubernetes: the module from the proxy, copied, `go build`."""
    if KUBE_ROUTER.exists():
        return
    module = f"github.com/cloudnativelabs/kube-router/v2@{KUBE_ROUTER_VERSION}"
    with step(f"build kube-router {KUBE_ROUTER_VERSION} from the Go module proxy (cold: about 5 min on 2 cores)"):
        log = LOGS / "build-kube-router.log"
        # The checksum database answers 404 for this module version here; the module's own go.sum
        # still pins every dependency.
        env = dict(_go_env(), GONOSUMDB="github.com/cloudnativelabs/kube-router")
        if not (KUBE_ROUTER_SRC / "go.mod").exists():
            out = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True,
                                 cwd="/", env=env)
            info = json.loads(out.stdout or "{}")
            if out.returncode != 0 or "Dir" not in info:
                raise ClusterError(f"`go mod download {module}` failed: {info.get('Error') or out.stderr}")
            tmp = KUBE_ROUTER_SRC.with_name(KUBE_ROUTER_SRC.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(info["Dir"], tmp, symlinks=True)
            subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=True)
            tmp.rename(KUBE_ROUTER_SRC)
        KUBE_ROUTER.parent.mkdir(parents=True, exist_ok=True)
        progress.run(["nice", "-n", "10", "go", "build", "-ldflags", "-s -w", "-o", str(KUBE_ROUTER),
                      "./cmd/kube-router"], log=log, cwd=KUBE_ROUTER_SRC, env=env, name="go build kube-router")


def ensure_runc_wrapper() -> None:
    src = Path(__file__).with_name("runc-wrapper")
    RUNC_WRAPPER.parent.mkdir(parents=True, exist_ok=True)
    if not RUNC_WRAPPER.exists() or RUNC_WRAPPER.read_bytes() != src.read_bytes():
        shutil.copy(src, RUNC_WRAPPER)
        RUNC_WRAPPER.chmod(0o755)


def pause_archive() -> Path:
    """A docker-archive tarball of the pause image, compiled from the Kubernetes tree."""
    out = CACHE / "images" / "pause.tar"
    if out.exists():
        return out
    with step("build the pause image from build/pause/linux/pause.c"):
        out.parent.mkdir(parents=True, exist_ok=True)
        binary = out.with_name("pause")
        subprocess.run(["gcc", "-Os", "-static", "-DVERSION=3.10.1", "-o", str(binary),
                        str(K8S_SRC / "build" / "pause" / "linux" / "pause.c")], check=True)
        subprocess.run(["strip", str(binary)], check=False)
        write_docker_archive(out, PAUSE_IMAGE, {"pause": binary.read_bytes()}, entrypoint=["/pause"])
    return out


def write_docker_archive(out: Path, tag: str, files: dict[str, bytes], entrypoint: list[str]) -> None:
    """A single-layer image as a `docker save` archive (ctr images import reads it)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        "os": "linux", "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "created": "1970-01-01T00:00:00Z",
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in ((config_name, config), ("layer.tar", layer_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Certificates and configuration


def node_ip() -> str:
    """The IPv4 address of the interface that holds the default route."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True,
                         text=True).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _cert(pki: Path, name: str, subject: str, *, sans: list[str] = (), client: bool = False) -> None:
    if (pki / f"{name}.crt").exists():
        return
    key, csr, crt, ext = (pki / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}"]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(ext), "-out", str(crt))
    csr.unlink()
    ext.unlink()


def _kubeconfig(path: Path, pki: Path, user: str, cert: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "llm-charts",
        "clusters": [{"name": "llm-charts", "cluster": {
            "server": f"https://127.0.0.1:{API_PORT}", "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(pki / f"{cert}.crt"),
                                          "client-key-data": b64(pki / f"{cert}.key")}}],
        "contexts": [{"name": "llm-charts", "context": {"cluster": "llm-charts", "user": user}}],
    }, indent=1))
    path.chmod(0o600)


def write_config(ip: str) -> None:
    pki = STATE / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(pki / "ca.key"))
        _openssl("req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", "/CN=llm-charts-ca",
                 "-days", "3650", "-sha256", "-out", str(pki / "ca.crt"))
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    _cert(pki, f"apiserver-{ip}", "/CN=kube-apiserver", sans=[
        "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost", "IP:127.0.0.1",
        f"IP:{API_SERVICE_IP}", f"IP:{ip}"])
    _cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin", client=True)
    _cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client=True)
    _cert(pki, f"kubelet-{ip}", f"/CN={NODE_NAME}", sans=[f"DNS:{NODE_NAME}", "DNS:localhost",
                                                          "IP:127.0.0.1", f"IP:{ip}"])
    _cert(pki, "node", f"/O=system:nodes/CN=system:node:{NODE_NAME}", client=True)
    _kubeconfig(KUBECONFIG, pki, "admin", "admin")
    _kubeconfig(STATE / "kubelet.kubeconfig", pki, f"system:node:{NODE_NAME}", "node")

    (STATE / "kubelet.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        # cgroup v1 hosts (Firecracker VMs among them) still work; 1.35+ refuses them by default.
        "failCgroupV1": False,
        "clusterDNS": [DNS_SERVICE_IP], "clusterDomain": "cluster.local",
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        "failSwapOn": False, "oomScoreAdj": 0, "readOnlyPort": 0,
        "tlsCertFile": str(pki / f"kubelet-{ip}.crt"), "tlsPrivateKeyFile": str(pki / f"kubelet-{ip}.key"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": False, "resolvConf": "/etc/resolv.conf",
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
    }, indent=1))
    (STATE / "kube-proxy.yaml").write_text(json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(KUBECONFIG)}, "mode": "iptables",
        "clusterCIDR": POD_CIDR, "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # conntrack sysctls are read-only in some VMs: leave them alone.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, indent=1))
    cni = STATE / "cni" / "net.d"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-llm-charts.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "llm-charts", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(STATE / "cni" / "ipam"),
                      "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))
    (STATE / "containerd.toml").write_text(f"""version = 2
root = "{STATE / 'containerd'}"
state = "{RUN / 'containerd' / 'state'}"
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC_WRAPPER}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
""")
    (STATE / "Corefile").write_text(f""".:53 {{
    bind {ip}
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {KUBECONFIG} llm-charts
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
""")


# ---------------------------------------------------------------------------------------------
# Processes


def _pidfile(name: str) -> Path:
    return RUN / f"{name}.pid"


def _alive(name: str, binary: Path | str) -> int | None:
    """The pid of our running `name`, checked against its executable (pids are reused)."""
    try:
        pid = int(_pidfile(name).read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if Path(exe).name == Path(binary).name else None


def _start(name: str, argv: list[str], env: dict | None = None) -> None:
    if _alive(name, argv[0]):
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        log.write(f"\n==== {time.ctime()} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, close_fds=True)
    _pidfile(name).write_text(str(proc.pid))
    say(f"  started {name} (pid {proc.pid}, log {LOGS / (name + '.log')})")


def _stop(name: str, binary: str) -> None:
    pid = _alive(name, binary)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        say(f"  stopped {name} (pid {pid})")
    _pidfile(name).unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _log_tail(name: str, lines: int = 15) -> str:
    return progress._tail(LOGS / f"{name}.log", lines)


def _http_ok(url: str, *, client_cert: bool = False) -> bool:
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
        ctx.check_hostname = False
        if client_cert:
            ctx.load_cert_chain(STATE / "pki" / "admin.crt", STATE / "pki" / "admin.key")
        else:
            ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return resp.status == 200
    except OSError:
        return False


def _await(name: str, what: str, check, timeout: float = 120) -> None:
    progress.wait_for(f"{name} ({what})", check, timeout=timeout, detail=lambda: _log_tail(name))


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", f"--kubeconfig={KUBECONFIG}", *args], input=input,
                          capture_output=True, text=True, check=check)


def _components(ip: str) -> list[tuple[str, list[str], dict | None, str, object]]:
    """(name, argv, env, what is awaited, check) in start order."""
    pki = STATE / "pki"
    path = f"{TRIXIE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = dict(os.environ, PATH=path)
    return [
        ("etcd", [str(TRIXIE_BIN / "etcd"), "--name=llm-charts", f"--data-dir={STATE / 'etcd'}",
                  f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                  f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                  f"--listen-peer-urls=http://127.0.0.1:{ETCD_PORT + 10}",
                  f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PORT + 10}",
                  f"--initial-cluster=llm-charts=http://127.0.0.1:{ETCD_PORT + 10}",
                  # a throwaway test store: no fsync keeps a slow shared disk from stalling the API
                  "--unsafe-no-fsync", "--snapshot-count=10000"],
         env, "health", lambda: _http_ok(f"http://127.0.0.1:{ETCD_PORT}/health")),
        ("kube-apiserver", [str(K8S_BIN / "kube-apiserver"),
                            f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                            f"--advertise-address={ip}", f"--secure-port={API_PORT}",
                            f"--service-cluster-ip-range={SERVICE_CIDR}",
                            f"--client-ca-file={pki / 'ca.crt'}",
                            f"--tls-cert-file={pki / f'apiserver-{ip}.crt'}",
                            f"--tls-private-key-file={pki / f'apiserver-{ip}.key'}",
                            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                            "--kubelet-preferred-address-types=InternalIP,Hostname",
                            f"--service-account-key-file={pki / 'sa.pub'}",
                            f"--service-account-signing-key-file={pki / 'sa.key'}",
                            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                            "--allow-privileged=true", "--profiling=false", "--v=1"],
         env, "/readyz", lambda: _http_ok(f"https://127.0.0.1:{API_PORT}/readyz", client_cert=True)),
        ("kube-controller-manager", [str(K8S_BIN / "kube-controller-manager"),
                                     f"--kubeconfig={KUBECONFIG}",
                                     f"--authentication-kubeconfig={KUBECONFIG}",
                                     f"--authorization-kubeconfig={KUBECONFIG}",
                                     "--bind-address=127.0.0.1", "--leader-elect=false",
                                     f"--service-account-private-key-file={pki / 'sa.key'}",
                                     f"--root-ca-file={pki / 'ca.crt'}",
                                     f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                                     f"--cluster-signing-key-file={pki / 'ca.key'}",
                                     "--use-service-account-credentials=true",
                                     f"--service-cluster-ip-range={SERVICE_CIDR}",
                                     # PVCs bind to directories under /tmp/hostpath_pv (test clusters only)
                                     "--enable-hostpath-provisioner=true", "--v=1"],
         env, "/healthz", lambda: _http_ok("https://127.0.0.1:10257/healthz")),
        ("kube-scheduler", [str(K8S_BIN / "kube-scheduler"), f"--kubeconfig={KUBECONFIG}",
                            f"--authentication-kubeconfig={KUBECONFIG}",
                            f"--authorization-kubeconfig={KUBECONFIG}",
                            "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"],
         env, "/healthz", lambda: _http_ok("https://127.0.0.1:10259/healthz")),
        ("containerd", [str(TRIXIE_BIN / "containerd"), f"--config={STATE / 'containerd.toml'}"],
         env, "socket", lambda: CONTAINERD_SOCK.exists() and _ctr("version").returncode == 0),
        ("kubelet", [str(K8S_BIN / "kubelet"), f"--config={STATE / 'kubelet.yaml'}",
                     f"--kubeconfig={STATE / 'kubelet.kubeconfig'}", f"--hostname-override={NODE_NAME}",
                     f"--node-ip={ip}", f"--root-dir={STATE / 'kubelet'}", "--v=1"],
         env, "/healthz", lambda: _http_ok("http://127.0.0.1:10248/healthz")),
        ("kube-proxy", [str(K8S_BIN / "kube-proxy"), f"--config={STATE / 'kube-proxy.yaml'}"],
         env, "/healthz", lambda: _http_ok("http://127.0.0.1:10256/healthz")),
        # NetworkPolicies: kube-router's firewall only (iptables + ipset on the host); routing and
        # Services stay with the bridge CNI and kube-proxy.
        ("kube-router", [str(KUBE_ROUTER), f"--kubeconfig={KUBECONFIG}", f"--hostname-override={NODE_NAME}",
                         "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
                         f"--service-cluster-ip-range={SERVICE_CIDR}",
                         f"--health-port={KUBE_ROUTER_HEALTH_PORT}", "--v=1"],
         env, "/healthz", lambda: _http_ok(f"http://127.0.0.1:{KUBE_ROUTER_HEALTH_PORT}/healthz")),
        ("coredns", [str(COREDNS), "-conf", str(STATE / "Corefile")],
         env, "/ready", lambda: _http_ok("http://127.0.0.1:18181/ready")),
    ]


def _ctr(*args: str, input: bytes | None = None, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TRIXIE_BIN / "ctr"), f"--address={CONTAINERD_SOCK}", "-n", "k8s.io", *args],
                          input=input, stdin=stdin, capture_output=True)


def import_image_archive(archive: Path) -> None:
    """Load a `docker save` archive into the cluster's containerd (namespace k8s.io)."""
    with open(archive, "rb") as f:
        out = _ctr("images", "import", "--no-unpack=false", "-", stdin=f)
    if out.returncode != 0:
        raise ClusterError(f"ctr images import {archive} failed: {out.stderr.decode()}")


def normalize_image(ref: str) -> str:
    """The name containerd stores an image under (docker.io/library/... for short names)."""
    first = ref.split("/")[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def image_present(ref: str) -> bool:
    return _ctr("images", "ls", "-q", f"name=={normalize_image(ref)}").stdout.decode().strip() != ""


def _network_setup() -> None:
    saved = STATE / "sysctl-before.json"
    before = {}
    for key, value in KERNEL_TUNABLES.items():
        p = Path("/proc/sys") / key
        if not p.exists():
            continue
        before[key] = p.read_text().strip()
        if before[key] != value:
            try:
                p.write_text(value)
            except OSError as exc:
                say(f"  warning: cannot set {key}={value}: {exc}")
    if not saved.exists():
        saved.write_text(json.dumps(before))
    # Pod traffic must pass FORWARD even where docker or a firewall set its policy to DROP.
    for rule in (["-s", POD_CIDR, "-j", "ACCEPT"], ["-d", POD_CIDR, "-j", "ACCEPT"]):
        if subprocess.run(["iptables", "-C", "FORWARD", *rule], capture_output=True).returncode != 0:
            subprocess.run(["iptables", "-I", "FORWARD", "1", *rule], check=True)


def _bootstrap_objects(ip: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": "standard",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
         "volumeBindingMode": "Immediate"},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
         "spec": {"clusterIP": DNS_SERVICE_IP, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
        # CoreDNS runs on the host: the Service has no selector, this slice points at the node.
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                      "labels": {"kubernetes.io/service-name": "kube-dns",
                                 "endpointslice.kubernetes.io/managed-by": "llm-charts-e2e"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]},
    ]}
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=llm-charts-e2e",
            "-f", "-", input=json.dumps(manifest))


def _node_ready() -> bool:
    out = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conds = {c["type"]: c["status"] for c in json.loads(out.stdout)["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def running() -> bool:
    """True when every component runs and the node is Ready (then `up()` only checks)."""
    ip = node_ip()
    return all(_alive(name, argv[0]) for name, argv, *_ in _components(ip)) and \
        _http_ok(f"https://127.0.0.1:{API_PORT}/readyz", client_cert=True) and _node_ready()


def up() -> Path:
    """Build what is missing, start what is not running, wait for a Ready node. Returns the kubeconfig."""
    LOGS.mkdir(parents=True, exist_ok=True)
    if KUBECONFIG.exists() and os.geteuid() == 0 and running():
        say(f"local cluster already running (kubeconfig {KUBECONFIG})")
        return KUBECONFIG
    preflight()
    ensure_kubernetes()
    ensure_trixie_binaries()
    ensure_coredns()
    ensure_kube_router()
    ensure_runc_wrapper()
    pause = pause_archive()
    ip = node_ip()
    with step(f"start the local cluster (Kubernetes {K8S_VERSION}, node {NODE_NAME} at {ip})"):
        write_config(ip)
        _network_setup()
        for name, argv, env, what, check in _components(ip):
            if name == "kubelet":
                if not image_present(PAUSE_IMAGE):
                    import_image_archive(pause)
            if name == "coredns":
                _bootstrap_objects(ip)
            _start(name, argv, env)
            _await(name, what, check)
        progress.wait_for(f"node {NODE_NAME} Ready", _node_ready, timeout=120,
                          detail=lambda: _log_tail("kubelet", 30))
        progress.wait_for("default ServiceAccount", lambda: kubectl(
            "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0, timeout=60)
    return KUBECONFIG


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m == str(root) or m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def down(delete: bool = False) -> None:
    """Stop every component and remove the pods' containers and network; with `delete`, also
    the cluster's state (etcd data, kubelet dir). Built binaries and loaded images are kept."""
    if not STATE.exists() and not any(_pidfile(n).exists() for n in ("etcd", "kubelet", "containerd")):
        say(f"no local cluster under {STATE}")
        return
    binaries = {name: argv[0] for name, argv, *_ in _components(node_ip())}
    with step("stop the local cluster" + (" and delete its state" if delete else "")):
        for name in reversed(binaries):
            if name not in ("containerd", "etcd", "kube-apiserver"):
                _stop(name, binaries[name])
        if _alive("containerd", binaries["containerd"]):
            # Pod containers outlive containerd (their shims keep them): remove them first.
            tasks = _ctr("tasks", "ls", "-q").stdout.decode().split()
            if tasks:
                _ctr("tasks", "delete", "--force", *tasks)
            containers = _ctr("containers", "ls", "-q").stdout.decode().split()
            if containers:
                _ctr("containers", "delete", *containers)
        for name in ("containerd", "kube-apiserver", "etcd"):
            _stop(name, binaries[name])
        if (K8S_BIN / "kube-proxy").exists():
            subprocess.run([str(K8S_BIN / "kube-proxy"), "--cleanup"], capture_output=True)
        _kube_router_cleanup()
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        for rule in (["-s", POD_CIDR, "-j", "ACCEPT"], ["-d", POD_CIDR, "-j", "ACCEPT"]):
            subprocess.run(["iptables", "-D", "FORWARD", *rule], capture_output=True)
        _unmount_under(STATE / "kubelet")
        _unmount_under(RUN)
        saved = STATE / "sysctl-before.json"
        if saved.exists():
            for key, value in json.loads(saved.read_text()).items():
                try:
                    (Path("/proc/sys") / key).write_text(value)
                except OSError:
                    pass
            saved.unlink()
        if delete:
            for d in ("etcd", "kubelet", "cni/ipam"):
                shutil.rmtree(STATE / d, ignore_errors=True)
            shutil.rmtree("/tmp/hostpath_pv", ignore_errors=True)


def _kube_router_cleanup() -> None:
    """Remove kube-router's firewall: the jumps from INPUT/FORWARD/OUTPUT, its chains, its ipsets.
    (`kube-router --cleanup-config` of v2.1.0 leaves them: its policy controller is not set up
    there, and the service proxy's cleanup panics.)"""
    prefixes = ("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-")
    dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout.splitlines()
    chains = [line[1:].split()[0] for line in dump if line.startswith(":" + "KUBE-") and
              line[1:].startswith(prefixes)]
    for line in dump:
        rule = shlex.split(line)
        if rule[:1] == ["-A"] and not rule[1].startswith(prefixes) and "-j" in rule and \
                rule[rule.index("-j") + 1].startswith(prefixes):
            subprocess.run(["iptables", "-D", *rule[1:]], capture_output=True)
    for op in ("-F", "-X"):
        for chain in chains:
            subprocess.run(["iptables", op, chain], capture_output=True)
    if shutil.which("ipset"):
        for name in subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split():
            if name.startswith(("KUBE-SRC-", "KUBE-DST-")):
                subprocess.run(["ipset", "destroy", name], capture_output=True)


def status() -> str:
    ip = node_ip()
    lines = [f"Kubernetes {K8S_VERSION}, cache {CACHE}, kubeconfig {KUBECONFIG}"]
    for name, argv, *_ in _components(ip):
        pid = _alive(name, argv[0])
        lines.append(f"  {name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "up":
        print(up())
    elif cmd in ("down", "delete"):
        down(delete=cmd == "delete")
    elif cmd == "status":
        print(status())
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

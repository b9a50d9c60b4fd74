"""What the cluster runs, built or fetched once and cached under $LLM_CHARTS_CACHE: the Kubernetes
server binaries, CoreDNS and kube-router (Go module proxy), etcd and containerd (Debian trixie),
the runc wrapper, the pause image. A second run finds them and skips all of this."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import debpkgs
import progress
from progress import step

import bootstrap

from . import containerd
from .settings import (
    CACHE,
    CNI_BIN,
    COREDNS,
    COREDNS_SRC,
    COREDNS_VERSION,
    K8S_BIN,
    K8S_BINARIES,
    K8S_SRC,
    K8S_VERSION,
    KUBE_ROUTER,
    KUBE_ROUTER_SRC,
    KUBE_ROUTER_VERSION,
    LOGS,
    PAUSE_IMAGE,
    PAUSE_VERSION,
    RUNC,
    RUNC_WRAPPER,
    TRIXIE,
    TRIXIE_BIN,
)

# Debian packages the host needs, by the command (or file) that proves each is there.
APT_NEEDS = {
    "iptables": "iptables",
    "conntrack": "conntrack",
    "openssl": "openssl",
    "gcc": "gcc",
    "/usr/include/stdio.h": "libc6-dev",
    "debootstrap": "debootstrap",
    "dockerd": "docker.io",
    str(RUNC): "runc",
    str(CNI_BIN / "bridge"): "containernetworking-plugins",
    "ip": "iproute2",
    "mount": "mount",
    "apt-get": "apt",
    "ipset": "ipset",
}


class ClusterError(RuntimeError):
    pass


@progress.exclusively(bootstrap.APT_LOCK, "apt-get")
def preflight() -> None:
    """Root on Linux with apt and Go; install the Debian packages that are missing."""
    if platform.system() != "Linux":
        raise ClusterError(
            "the local cluster needs Linux (root, Debian/Ubuntu); use kind or an "
            "existing cluster (LLM_CHARTS_KUBECONFIG) elsewhere"
        )
    if os.geteuid() != 0:
        raise ClusterError(
            "the local cluster needs root (it runs containerd, the kubelet and "
            "iptables); run as root, or point LLM_CHARTS_KUBECONFIG at a cluster"
        )
    if not shutil.which("go"):
        raise ClusterError(
            "the local cluster builds Kubernetes from the Go module proxy: install Go (>= 1.24) and put it on PATH"
        )
    missing = sorted(
        {
            pkg
            for need, pkg in APT_NEEDS.items()
            if not (Path(need).exists() if need.startswith("/") else shutil.which(need))
        }
    )
    if missing:
        if not shutil.which("apt-get"):
            raise ClusterError(f"missing Debian packages {missing} and no apt-get to install them")
        with step(f"apt-get install {' '.join(missing)}"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            progress.run([*bootstrap.APT_GET, "update", "-q"], log=LOGS / "apt.log", env=env)
            progress.run(
                [*bootstrap.APT_GET, "install", "-y", "-q", "--no-install-recommends", *missing],
                log=LOGS / "apt.log",
                env=env,
            )


def _go_env() -> dict:
    return dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")


def _module_copy(module: str, dest: Path, env: dict, prepare: Callable[[Path], None] | None = None) -> Path:
    """A writable copy of `module` (path@version) from the Go module proxy at `dest`, made once;
    `prepare` edits the copy before it takes its place."""
    if (dest / "go.mod").exists():
        return dest
    out = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True, cwd="/", env=env)
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise ClusterError(f"`go mod download {module}` failed: {info.get('Error') or out.stderr}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(info["Dir"], tmp, symlinks=True)
    subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=True)
    if prepare:
        prepare(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# The test cluster's changes to the Kubernetes sources, (file, upstream text, replacement): the
# in-tree hostPath provisioner creates each volume 0750 root:root, and hostPath volumes get no
# fsGroup, so no non-root pod could write its PVC; make them world-writable, as the
# local-path-provisioner of kind and k3s does.
K8S_PATCHES = [
    (
        "pkg/volume/hostpath/host_path.go",
        """	if err := os.MkdirAll(pv.Spec.HostPath.Path, 0750); err != nil {
		return nil, err
	}
""",
        """	if err := os.MkdirAll(pv.Spec.HostPath.Path, 0777); err != nil {
		return nil, err
	}
	if err := os.Chmod(pv.Spec.HostPath.Path, 0777); err != nil { // llm-charts: writable for non-root pods
		return nil, err
	}
""",
    )
]
# Bump when K8S_PATCHES change: cached binaries of another recipe are rebuilt.
K8S_RECIPE = "2"


def _patch_kubernetes_sources() -> None:
    for rel, old, new in K8S_PATCHES:
        path = K8S_SRC / rel
        text = path.read_text()
        if new in text:
            continue
        if old not in text:
            raise ClusterError(
                f"{path}: the text llm-charts patches is not there (Kubernetes {K8S_VERSION}); "
                "adapt K8S_PATCHES in tools/localcluster/artifacts.py"
            )
        path.chmod(0o644)
        path.write_text(text.replace(old, new))


def _published_staging(src: Path, log: Path) -> None:
    """The module zip has no staging/ sources (vendor/ links into them): use the published
    k8s.io/X v0.N.M modules instead."""
    for name in ("vendor", "go.work", "go.work.sum"):
        p = src / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    staging = "v0." + K8S_VERSION.split(".", 1)[1]
    gomod = src / "go.mod"
    lines = []
    for line in gomod.read_text().splitlines():
        if "=> ./staging/src/" in line:
            mod = line.split("=>")[0].strip()
            line = f"\t{mod} => {mod} {staging}"
        lines.append(line)
    gomod.write_text("\n".join(lines) + "\n")
    progress.run(["go", "mod", "download"], log=log, cwd=src, env=_go_env(), name="go mod download")


@progress.exclusively(K8S_BIN / "kubernetes", f"Kubernetes {K8S_VERSION}")
def ensure_kubernetes() -> None:
    stamp = K8S_BIN / ".recipe"
    if all((K8S_BIN / b).exists() for b in K8S_BINARIES) and stamp.exists() and stamp.read_text() == K8S_RECIPE:
        return
    with step(f"build Kubernetes {K8S_VERSION} server binaries from the Go module proxy (cold: 15-30 min on 2 cores)"):
        log = LOGS / "build-kubernetes.log"
        _module_copy(f"k8s.io/kubernetes@{K8S_VERSION}", K8S_SRC, _go_env(), lambda tmp: _published_staging(tmp, log))
        _patch_kubernetes_sources()
        minor = K8S_VERSION.split(".")[1]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
                f"-X k8s.io/client-go/pkg/version.gitVersion={K8S_VERSION}",
            ]
        )
        K8S_BIN.mkdir(parents=True, exist_ok=True)
        progress.run(
            [
                "nice",
                "-n",
                "10",
                "go",
                "build",
                "-ldflags",
                ldflags,
                "-o",
                f"{K8S_BIN}/",
                *[f"./cmd/{b}" for b in K8S_BINARIES],
            ],
            log=log,
            cwd=K8S_SRC,
            env=_go_env(),
            name="go build",
        )
        stamp.write_text(K8S_RECIPE)


@progress.exclusively(TRIXIE_BIN / "trixie", "etcd and containerd from Debian trixie")
def ensure_trixie_binaries() -> None:
    """etcd 3.5 and containerd 1.7 from Debian trixie (bookworm's are too old for 1.3x)."""
    needed = ("etcd", "containerd", "containerd-shim-runc-v2", "ctr")
    if all((TRIXIE_BIN / b).exists() for b in needed):
        return
    with step("fetch etcd-server and containerd from Debian trixie (private apt lists)"):
        debpkgs.unpack("trixie", ["etcd-server", "containerd"], TRIXIE, log=LOGS / "apt-trixie.log")


# The plugins the Corefile uses (config.py), and a few for looking into it by hand. The release
# binary compiles all ~60 (cloud DNS SDKs among them): measured below in docs/e2e.md.
COREDNS_PLUGINS = ("bind", "cache", "errors", "forward", "health", "kubernetes", "ready", "log", "loop", "reload")


@progress.exclusively(COREDNS, f"CoreDNS {COREDNS_VERSION}")
def ensure_coredns() -> None:
    """CoreDNS with COREDNS_PLUGINS only: the module copied, its generated plugin list cut, `go build`."""
    if COREDNS.exists():
        return
    with step(f"build CoreDNS {COREDNS_VERSION} from the Go module proxy (cold: 3-5 min on 2 cores)"):
        src = _module_copy(f"github.com/coredns/coredns@{COREDNS_VERSION}", COREDNS_SRC, _go_env())
        zplugin = src / "core" / "plugin" / "zplugin.go"
        prefix = '_ "github.com/coredns/coredns/plugin/'
        lines = zplugin.read_text().splitlines()
        kept = [ln for ln in lines if prefix not in ln or ln.strip()[len(prefix) :].rstrip('"') in COREDNS_PLUGINS]
        if sum(prefix in ln for ln in kept) != len(COREDNS_PLUGINS):
            raise ClusterError(f"{zplugin} does not import every plugin of COREDNS_PLUGINS (CoreDNS {COREDNS_VERSION})")
        zplugin.write_text("\n".join(kept) + "\n")
        COREDNS.parent.mkdir(parents=True, exist_ok=True)
        progress.run(
            ["nice", "-n", "10", "go", "build", "-ldflags", "-s -w", "-o", str(COREDNS), "."],
            log=LOGS / "build-coredns.log",
            cwd=src,
            env=_go_env(),
            name="go build coredns",
        )


@progress.exclusively(KUBE_ROUTER, f"kube-router {KUBE_ROUTER_VERSION}")
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
        _module_copy(module, KUBE_ROUTER_SRC, env)
        KUBE_ROUTER.parent.mkdir(parents=True, exist_ok=True)
        progress.run(
            ["nice", "-n", "10", "go", "build", "-ldflags", "-s -w", "-o", str(KUBE_ROUTER), "./cmd/kube-router"],
            log=log,
            cwd=KUBE_ROUTER_SRC,
            env=env,
            name="go build kube-router",
        )


def ensure_runc_wrapper() -> None:
    src = Path(__file__).with_name("runc-wrapper")
    RUNC_WRAPPER.parent.mkdir(parents=True, exist_ok=True)
    if not RUNC_WRAPPER.exists() or RUNC_WRAPPER.read_bytes() != src.read_bytes():
        shutil.copy(src, RUNC_WRAPPER)
        RUNC_WRAPPER.chmod(0o755)


@progress.exclusively(CACHE / "images" / "pause.tar", "the pause image")
def pause_archive() -> Path:
    """A docker-archive tarball of the pause image, compiled from the Kubernetes tree."""
    out = CACHE / "images" / "pause.tar"
    if out.exists():
        return out
    with step("build the pause image from build/pause/linux/pause.c"):
        out.parent.mkdir(parents=True, exist_ok=True)
        binary = out.with_name("pause")
        subprocess.run(
            [
                "gcc",
                "-Os",
                "-static",
                f"-DVERSION={PAUSE_VERSION}",
                "-o",
                str(binary),
                str(K8S_SRC / "build" / "pause" / "linux" / "pause.c"),
            ],
            check=True,
        )
        subprocess.run(["strip", str(binary)], check=False)
        containerd.write_docker_archive(out, PAUSE_IMAGE, {"pause": binary.read_bytes()}, entrypoint=["/pause"])
    return out


def ensure_all() -> Path:
    """Everything the cluster needs; returns the pause image archive. The three Go builds run at
    once: their module downloads overlap the compiles."""
    import concurrent.futures

    preflight()
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        builds = [pool.submit(f) for f in (ensure_kubernetes, ensure_coredns, ensure_kube_router)]
        ensure_trixie_binaries()
        ensure_runc_wrapper()
        for b in builds:
            b.result()
    return pause_archive()

"""Test images built from the repository's Dockerfiles (all `FROM debian:bookworm-slim`).

Where no registry is reachable, `debian:bookworm-slim` is seeded from debootstrap (a minbase
bookworm root filesystem imported into docker under that tag), so the Dockerfiles build
unchanged here and on a normal machine. Tags carry a hash of the build context: an edited
Dockerfile or mock gives a new tag, and the pods that use it roll.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import localcluster, progress
from .progress import step

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"mock-openai": REPO / "images" / "mock-openai", "gateway": REPO / "images" / "gateway"}
BASE = "debian:bookworm-slim"
BASE_ARCHIVE = localcluster.CACHE / "images" / "debian-bookworm-minbase.tar"
DOCKER_ENV = dict(os.environ, DOCKER_BUILDKIT="0")  # the legacy builder works with any daemon


def image_ref(name: str) -> str:
    digest = hashlib.sha256()
    root = IMAGES[name]
    # What the build uses: not the docs or the values files kept beside the Dockerfile.
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix != ".md" and p.name != "values.yaml"):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"llm-charts/{name}:e2e-{digest.hexdigest()[:12]}"


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          env=DOCKER_ENV, **kw)


def ensure_docker() -> None:
    """Use a running docker daemon, or start Debian's dockerd (no systemd needed)."""
    if shutil.which("docker") and docker("info", check=False).returncode == 0:
        return
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        raise RuntimeError("building the test images needs a docker daemon: start one, or run as root "
                           "with Debian's docker.io installed (the local cluster installs it)")
    with step("start dockerd"):
        # No iptables/bridge of its own: builds use --network host, pods use the cluster's CNI.
        localcluster._start("dockerd", [shutil.which("dockerd"), "--iptables=false", "--ip-masq=false",
                                        "--bridge=none", "--oom-score-adjust=0"])
        progress.wait_for("docker info", lambda: docker("info", check=False).returncode == 0, timeout=60,
                          detail=lambda: localcluster._log_tail("dockerd"))


def stop_docker() -> None:
    """Stop dockerd if this tooling started it."""
    localcluster._stop("dockerd", "dockerd")


def ensure_base() -> None:
    if docker("image", "inspect", BASE, check=False).returncode == 0:
        return
    if docker("pull", BASE, check=False, timeout=120).returncode == 0:
        return
    if not BASE_ARCHIVE.exists():
        if not shutil.which("debootstrap"):
            raise RuntimeError(f"{BASE} cannot be pulled and debootstrap is missing (apt-get install debootstrap)")
        with step(f"seed {BASE} from debootstrap (no registry reachable; about a minute)"):
            rootfs = BASE_ARCHIVE.with_suffix(".rootfs")
            shutil.rmtree(rootfs, ignore_errors=True)
            progress.run(["debootstrap", "--variant=minbase", "bookworm", rootfs,
                          "http://deb.debian.org/debian"], log=localcluster.LOGS / "debootstrap.log")
            for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
            (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(BASE_ARCHIVE), "."],
                           check=True)
            shutil.rmtree(rootfs)
    with step(f"import {BASE} from {BASE_ARCHIVE}"):
        with open(BASE_ARCHIVE, "rb") as f:
            subprocess.run(["docker", "import", "-c", 'CMD ["bash"]', "-", BASE], stdin=f, check=True,
                           capture_output=True, env=DOCKER_ENV)


def build(name: str) -> str:
    """Build images/<name> (once per content hash) and return its reference."""
    ref = image_ref(name)
    if docker("image", "inspect", ref, check=False).returncode == 0:
        return ref
    ensure_docker()
    ensure_base()
    with step(f"docker build {ref}"):
        progress.run(["docker", "build", "--network", "host", "-t", ref, str(IMAGES[name])],
                     log=localcluster.LOGS / f"build-image-{name}.log", env=DOCKER_ENV,
                     name=f"docker build {name}")
    return ref


def build_all() -> dict[str, str]:
    ensure_docker()
    return {name: build(name) for name in IMAGES}


def save(ref: str) -> Path:
    out = localcluster.CACHE / "images" / (ref.replace("/", "_").replace(":", "_") + ".tar")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        docker("save", "-o", str(tmp), ref)
        tmp.rename(out)
    return out

"""The stack's images, built with docker from images/<name>/Dockerfile.

| image | from | what |
|---|---|---|
| mock-openai | debian:bookworm-slim | fake OpenAI server (gateway suite, helm test Pods' curl) |
| gateway | debian:bookworm-slim | nginx + Lua for charts/api-gateway |
| llama-server | debian:forky-slim | Debian's llama.cpp for charts/ramalama-models |
| python-torch | debian:bookworm-slim | Python 3.11 + torch 2.13.0: the shared base of the next two |
| vllm-cpu | python-torch | vLLM for CPUs for charts/vllm-models |
| openwebui | python-torch | Open WebUI for charts/openwebui |
| argocd, redis | debian:bookworm-slim | Argo CD (the Go binary and helm) and Debian's redis-server (tools/stack/argocd.py) |
| traefik | debian:bookworm-slim | Traefik, the Gateway API implementation of the e2e (tools/stack/traefik.py) |

Where no registry is reachable, the Debian bases are seeded with debootstrap (a minbase root
filesystem imported into docker under the Docker Hub tag), so the Dockerfiles build unchanged
here and on a normal machine. A tag is `e2e-` plus a hash of the build's inputs (the context,
the base image's tag, the build arguments, the pins of the Go programs copied in): an edited
input gives a new tag and the pods roll, an unchanged one is never rebuilt. Go programs
(`binaries`) are the pinned tools of tools/versions.json, built by tools/bootstrap.py on first
use. Settings: LLM_CHARTS_BUILD_CA_BUNDLE (see build_ca_bundle).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import localcluster
import progress
from localcluster import processes
from progress import step

import bootstrap

REPO = Path(__file__).resolve().parents[2]
DOCKER_ENV = dict(os.environ, DOCKER_BUILDKIT="0")  # the legacy builder works with any daemon


@dataclass(frozen=True)
class Image:
    name: str
    base: str  # a Debian tag, or the name of another Image (then passed as build-arg BASE)
    args: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the build context; default images/<name>
    # Go tools of tools/versions.json copied into the context (their pins, not their bytes, are inputs)
    binaries: tuple[str, ...] = ()

    @property
    def context(self) -> Path:
        return self.path or REPO / "images" / self.name


IMAGES = {
    i.name: i
    for i in [
        Image("mock-openai", "debian:bookworm-slim"),
        Image("gateway", "debian:bookworm-slim"),
        Image("llama-server", "debian:forky-slim"),
        Image("python-torch", "debian:bookworm-slim"),
        Image("vllm-cpu", "python-torch"),
        Image("openwebui", "python-torch"),
        Image("argocd", "debian:bookworm-slim", binaries=("argocd", "helm")),
        Image("redis", "debian:bookworm-slim"),
        Image("traefik", "debian:bookworm-slim", binaries=("traefik",)),
    ]
}
# Debian bases by tag: (suite, debootstrap script).
DEBIAN_BASES = {"debian:bookworm-slim": ("bookworm", "bookworm"), "debian:forky-slim": ("forky", "sid")}


class ImageError(RuntimeError):
    pass


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, env=DOCKER_ENV, **kw)


def _inputs(root: Path) -> list[Path]:
    """The files a build uses: not the docs or the values files kept beside the Dockerfile, nor a
    build-ca.pem left from a build by hand (the build environment, not an input)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".md"
        and p.name not in ("values.yaml", "build-ca.pem")
    )


def image_ref(name: str) -> str:
    image = IMAGES[name]
    digest = hashlib.sha256()
    for path in _inputs(image.context):
        digest.update(str(path.relative_to(image.context)).encode() + b"\0" + path.read_bytes() + b"\0")
    base = image_ref(image.base) if image.base in IMAGES else image.base
    digest.update(f"base={base}\0".encode())
    for k, v in sorted(image.args.items()):
        digest.update(f"{k}={v}\0".encode())
    for tool in image.binaries:
        digest.update(f"go={bootstrap.tool_id(tool)}\0".encode())
    return f"llm-charts/{name}:e2e-{digest.hexdigest()[:12]}"


def build_ca_bundle() -> Path | None:
    """CA certificates the builds trust for PyPI, for hosts behind a TLS-inspecting proxy:
    LLM_CHARTS_BUILD_CA_BUNDLE, else the bundle pip on this host is told to use (PIP_CERT,
    SSL_CERT_FILE, REQUESTS_CA_BUNDLE). Copied into the build context only; not an input of the
    tag, not used by the images at run time."""
    for var in ("LLM_CHARTS_BUILD_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value:
            path = Path(value)
            if not path.is_file():
                raise ImageError(
                    f"{var}={value}: no such file (a PEM bundle of CA certificates the image "
                    "builds should trust); unset it or point it at one"
                )
            return path
    return None


@progress.exclusively(localcluster.CACHE / "dockerd", "dockerd")
def ensure_docker() -> None:
    """Use a running docker daemon, or start Debian's dockerd (no systemd needed)."""
    if shutil.which("docker") and docker("info", check=False).returncode == 0:
        if os.nice(0) == 0:  # the e2e after .ci/run's prebuild: the daemon it started back to normal
            processes.renice("dockerd", "dockerd", 0)
        return
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        raise ImageError(
            "building the images needs a docker daemon: start one, or run as root "
            "with Debian's docker.io installed (the local cluster installs it)"
        )
    with step("start dockerd"):
        # No iptables/bridge of its own: builds use --network host, pods use the cluster's CNI.
        processes.start(
            "dockerd",
            [
                shutil.which("dockerd") or "dockerd",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--oom-score-adjust=0",
            ],
        )
        progress.wait_for(
            "docker info",
            lambda: docker("info", check=False).returncode == 0,
            timeout=60,
            detail=lambda: processes.log_tail("dockerd"),
        )
        processes.renice("dockerd", "dockerd", os.nice(0))  # its builds as niced as this run


def stop_docker() -> None:
    """Stop dockerd if this tooling started it."""
    processes.stop("dockerd", "dockerd")


def ensure_debian_base(tag: str) -> None:
    # Images built at once (threads, or .ci/run's prebuild and the e2e) share their base: seed it once.
    with progress.exclusive(localcluster.CACHE / "images" / f"debian-{DEBIAN_BASES[tag][0]}", tag):
        _ensure_debian_base(tag)


def _ensure_debian_base(tag: str) -> None:
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return
    if docker("pull", tag, check=False, timeout=120).returncode == 0:
        return
    suite, script = DEBIAN_BASES[tag]
    archive = localcluster.CACHE / "images" / f"debian-{suite}-minbase.tar"
    if not archive.exists():
        if not shutil.which("debootstrap"):
            raise ImageError(f"{tag} cannot be pulled and debootstrap is missing (apt-get install debootstrap)")
        with step(f"seed {tag} from debootstrap (no registry reachable; about a minute)"):
            rootfs = archive.with_suffix(".rootfs")
            shutil.rmtree(rootfs, ignore_errors=True)
            progress.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    suite,
                    rootfs,
                    "http://deb.debian.org/debian",
                    f"/usr/share/debootstrap/scripts/{script}",
                ],
                log=localcluster.LOGS / f"debootstrap-{suite}.log",
            )
            for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
            (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            tmp = archive.with_suffix(".tmp")
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tmp), "."], check=True)
            tmp.rename(archive)
            shutil.rmtree(rootfs)
    with step(f"import {tag} from {archive}"):
        with open(archive, "rb") as f:
            subprocess.run(
                ["docker", "import", "-c", 'CMD ["bash"]', "-", tag],
                stdin=f,
                check=True,
                capture_output=True,
                env=DOCKER_ENV,
            )


def present(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def build(name: str) -> str:
    """Build images/<name> once per input hash (its base first) and return its reference."""
    image = IMAGES[name]
    ref = image_ref(name)
    if present(ref):
        return ref
    ensure_docker()
    args = dict(image.args)
    if image.base in IMAGES:
        args["BASE"] = build(image.base)
    else:
        ensure_debian_base(image.base)
    with progress.exclusive(localcluster.CACHE / "images" / name, f"image {ref}"):
        if not present(ref):  # or another process built it while this one waited
            _docker_build(image, ref, args)
    return ref


def _docker_build(image: Image, ref: str, args: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix=f"llm-charts-{image.name}-") as tmp:
        context = Path(tmp) / image.name
        shutil.copytree(image.context, context, ignore=shutil.ignore_patterns("__pycache__", "*.md", "build-ca.pem"))
        for tool in image.binaries:
            shutil.copy(bootstrap.go_tool(tool), context / tool)
        ca = build_ca_bundle()
        (context / "build-ca.pem").write_bytes(ca.read_bytes() if ca else b"")
        with step(f"docker build {ref}"):
            progress.run(
                [
                    "docker",
                    "build",
                    "--network",
                    "host",
                    "-t",
                    ref,
                    *[a for k, v in sorted(args.items()) for a in ("--build-arg", f"{k}={v}")],
                    str(context),
                ],
                log=localcluster.LOGS / f"build-image-{image.name}.log",
                env=DOCKER_ENV,
                name=f"docker build {image.name}",
            )


def build_many(names: list[str]) -> dict[str, str]:
    """Build several images at once (downloads overlap); an image on top of another waits for it."""
    ensure_docker()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures: dict[str, concurrent.futures.Future] = {}

        def submit(name: str) -> concurrent.futures.Future:
            if name not in futures:
                base = IMAGES[name].base
                dep = submit(base) if base in IMAGES else None
                futures[name] = pool.submit(lambda: (dep.result() if dep else None, build(name))[1])
            return futures[name]

        for n in names:
            submit(n)
        return {n: futures[n].result() for n in names}


def size(ref: str) -> int:
    return int(docker("image", "inspect", ref, "--format", "{{.Size}}").stdout.strip())


def save_into(ref: str, load) -> None:
    """Stream `docker save ref` into `load(pipe)` (no archive on disk: the big images are GBs)."""
    proc = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=DOCKER_ENV)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        load(proc.stdout)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode()
        if proc.wait() != 0:
            raise ImageError(f"docker save {ref} failed: {err}")

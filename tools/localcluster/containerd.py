"""Images in the cluster's containerd (namespace k8s.io): import, look up, and the one image this
tooling writes itself (pause, a single-layer `docker save` archive)."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
from pathlib import Path
from typing import IO

from .settings import CONTAINERD_SOCK, TRIXIE_BIN


def ctr(*args: str, input: bytes | None = None, stdin: IO[bytes] | int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TRIXIE_BIN / "ctr"), f"--address={CONTAINERD_SOCK}", "-n", "k8s.io", *args],
        input=input,
        stdin=stdin,
        capture_output=True,
    )


class ImageError(RuntimeError):
    pass


def import_archive(archive: Path | IO[bytes]) -> None:
    """Load a `docker save` archive (a file, or a pipe from `docker save`) into containerd, unpacked;
    the compressed layers are dropped after unpacking (the big images would be stored twice)."""
    if isinstance(archive, Path):
        with open(archive, "rb") as f:
            out = ctr("images", "import", "--discard-unpacked-layers", "-", stdin=f)
    else:
        out = ctr("images", "import", "--discard-unpacked-layers", "-", stdin=archive)
    if out.returncode != 0:
        raise ImageError(f"ctr images import {archive} failed: {out.stderr.decode()}")


def normalize(ref: str) -> str:
    """The name containerd stores an image under (docker.io/library/... for short names)."""
    first = ref.split("/")[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def present(ref: str) -> bool:
    return ctr("images", "ls", "-q", f"name=={normalize(ref)}").stdout.decode().strip() != ""


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
    config = json.dumps(
        {
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "created": "1970-01-01T00:00:00Z",
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in ((config_name, config), ("layer.tar", layer_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))

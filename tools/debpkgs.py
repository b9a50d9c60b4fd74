"""Debian packages of another suite (trixie, forky), fetched with a private apt list and unpacked
with `dpkg -x` into a cache folder: nothing is installed system-wide, the host's apt is untouched.

    root = unpack("forky", ["llama.cpp-tools", "libllama0"], CACHE / "apt-forky")
    root / "usr/bin/llama-server"

Needs apt-get and dpkg (Debian or Ubuntu); the archive keyring of the host verifies the lists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import progress

MIRROR = os.environ.get("LLM_CHARTS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DebianError(RuntimeError):
    pass


def _apt(base: Path, *args: str) -> list[str]:
    return [
        "apt-get",
        "-q",
        "-o",
        f"Dir::Etc::SourceList={base / 'sources.list'}",
        "-o",
        "Dir::Etc::SourceParts=/dev/null",
        "-o",
        f"Dir::State::Lists={base / 'lists'}",
        "-o",
        f"Dir::Cache::Archives={base / 'archives'}",
        # A testing suite's Release file can be past its Valid-Until on a lagging mirror;
        # the signatures are still checked.
        "-o",
        "Acquire::Check-Valid-Until=false",
        *args,
    ]


def unpack(suite: str, packages: list[str], base: Path, *, log: Path, stamp: str | None = None) -> Path:
    """Download `packages` (exact names, `name=version` allowed, no dependency resolution) from
    `suite` and unpack them into `base`/root, once: `stamp` (default: the package list) names
    what is there, and a different one starts over. Returns the root folder."""
    root = base / "root"
    stamp_file = base / "unpacked"
    want = stamp or " ".join(packages)
    if stamp_file.exists() and stamp_file.read_text() == want:
        return root
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise DebianError(
            f"fetching {', '.join(packages)} from Debian {suite} needs apt-get and dpkg (Debian or Ubuntu)"
        )
    if not KEYRING.exists():
        raise DebianError(f"{KEYRING} is missing: apt-get install debian-archive-keyring")
    shutil.rmtree(root, ignore_errors=True)
    stamp_file.unlink(missing_ok=True)
    for d in ("lists/partial", "archives/partial", "root"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n")
    progress.run(_apt(base, "update"), log=log, name=f"apt-get update ({suite})")
    for old in (base / "archives").glob("*.deb"):
        old.unlink()
    progress.run(_apt(base, "download", *packages), log=log, cwd=base / "archives", name=f"apt-get download ({suite})")
    for deb in sorted((base / "archives").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    stamp_file.write_text(want)
    return root

"""llama.cpp's `llama-server` on this host, without a container and without installing anything.

Debian ships llama.cpp (`llama.cpp-tools`) from forky on, built against glibc 2.43, newer than
the host's. So the forky packages and the libraries they need (glibc, libstdc++, OpenSSL, ...)
are unpacked into the cache ($LLM_CHARTS_CACHE/llama.cpp-VERSION) and the binary runs through
that folder's own dynamic loader with `--library-path`. ggml looks for its CPU backends
(`libggml-cpu-<microarchitecture>.so`) next to the running executable, which is then the loader:
the backends are copied there, and ggml picks the best one for this CPU as it does when installed.

    import llamacpp
    argv = llamacpp.ensure_llama_server() + ["--model", "m.gguf", "--port", "8081", "-t", "1"]
    subprocess.Popen(argv)

CLI: python3 tools/llamacpp.py [llama-server arguments...]   (prints the prefix without any)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import debpkgs
import progress

CACHE = Path(os.environ.get("LLM_CHARTS_CACHE") or Path.home() / ".cache" / "llm-charts").expanduser()
# The Debian version of llama.cpp (upstream build 11669), as in images/llama-server/Dockerfile.
VERSION = "1:0.7.0+dfsg-2"
SUITE = "forky"
# llama-server and what it loads that the host's (older) libraries cannot provide.
PACKAGES = [
    f"llama.cpp-tools={VERSION}",
    f"libllama0={VERSION}",
    "libggml0",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libgomp1",
    "libssl3t64",
    "zlib1g",
    "libzstd1",
]
MULTIARCH = "x86_64-linux-gnu"


def _base() -> Path:
    return CACHE / f"llama.cpp-{VERSION.split(':')[-1]}"


def ensure_llama_server() -> list[str]:
    """The command prefix that runs llama-server on this host (x86_64 Linux with apt and dpkg):
    [loader, --library-path, dirs, llama-server]; append llama-server's own arguments."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise debpkgs.DebianError(
            "the host llama-server is built for x86_64 Linux; run the llama-server image instead (images/llama-server)"
        )
    base = _base()
    lib = base / "root" / "usr" / "lib" / MULTIARCH
    loader = lib / "ld-linux-x86-64.so.2"
    server = base / "root" / "usr" / "bin" / "llama-server"
    if not (server.exists() and loader.exists() and any(lib.glob("libggml-cpu-*.so"))):
        with progress.step(f"fetch llama.cpp {VERSION} from Debian {SUITE} (dpkg -x into {base})"):
            debpkgs.unpack(SUITE, PACKAGES, base, log=base / "fetch.log", stamp=" ".join(PACKAGES) + " v1")
            for backend in (lib / "ggml" / "backends0").glob("libggml-cpu-*.so"):
                shutil.copy2(backend, lib / backend.name)
    return [str(loader), "--library-path", f"{lib}:{lib / 'llama'}", str(server)]


def version() -> str:
    """`llama-server --version`'s first line, e.g. `version: 0.7.0 (build 11669, commit Debian)`."""
    out = subprocess.run([*ensure_llama_server(), "--version"], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip().splitlines()[0]


if __name__ == "__main__":
    prefix = ensure_llama_server()
    if len(sys.argv) == 1:
        print(" ".join(prefix))
        sys.exit(0)
    os.execv(prefix[0], prefix + sys.argv[1:])

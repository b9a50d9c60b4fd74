#!/usr/bin/env python3
"""Install the project's pinned tools into a project-local cache.

Go programs (helm 3, helm 4, chart-testing, helm-docs) are built from the Go
module proxy at the versions in tools/versions.json, into $LLM_CHARTS_TOOLS_DIR
(default: <repo>/.tools). Tools marked "lazy" there (promtool, and promql-check,
the repository's own program in tools/promql) are built only when a session asks
for one (go_tool), never by `bootstrap.py` itself: promtool alone takes minutes. The third-party CRDs the tests validate against are
copied from their upstream Go modules (same proxy, versions and a sha256 per
file in tools/versions.json) into <tools dir>/crds. Nothing goes into the
system except Debian packages, which are installed only when asked for, only
as root on Debian, and otherwise named in the error.

    python3 tools/bootstrap.py            # build what is missing, print paths
    python3 tools/bootstrap.py --check    # only report
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import progress  # tools/progress.py (the standard library only, like this file)

REPO = Path(__file__).resolve().parent.parent
VERSIONS = json.loads((REPO / "tools" / "versions.json").read_text())
BUILD_RECIPE = 2


class ToolError(RuntimeError):
    """A tool is missing and could not be provided; the message says how to get it."""


def tools_dir() -> Path:
    return Path(os.environ.get("LLM_CHARTS_TOOLS_DIR", REPO / ".tools")).resolve()


def bin_dir() -> Path:
    return tools_dir() / "bin"


def cache_dir() -> Path:
    """$LLM_CHARTS_CACHE (default ~/.cache/llm-charts): what the e2e builds, kept across clones."""
    return Path(os.environ.get("LLM_CHARTS_CACHE") or Path.home() / ".cache" / "llm-charts").expanduser()


def _target_dir(name: str) -> Path:
    """Tools marked "cache" (the programs the e2e runs in its cluster) live in the cache, the others
    in the tools folder."""
    return cache_dir() / "bin" if VERSIONS["go"][name].get("cache") else bin_dir()


def _log(msg: str) -> None:
    print(f"[bootstrap] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise ToolError(
            "Go is not installed, and it is needed to build the pinned Helm tools "
            f"({', '.join(VERSIONS['go'])}). Install Go 1.22 or newer "
            "(Debian: apt-get install golang-go, or the tarball from go.dev), "
            "then run `python3 tools/bootstrap.py` again."
        )
    return go


def _spec(name: str) -> str:
    t = VERSIONS["go"][name]
    if "dir" in t:  # a program of this repository: its go.mod and go.sum pin its modules
        return f"{t['dir']} {t['package']} sha256:{_dir_digest(REPO / t['dir'])[:16]}"
    tags = f" -tags {t['tags']}" if t.get("tags") else ""
    return f"{t['module']}@{t['version']} {t['package']}{tags}"


def _dir_digest(folder: Path) -> str:
    """Of the sources a local Go program is built from (a changed file rebuilds it)."""
    h = hashlib.sha256()
    sources = (p for p in folder.rglob("*") if p.is_file() and (p.name in ("go.mod", "go.sum") or p.suffix == ".go"))
    for f in sorted(sources):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def eager_tools() -> list[str]:
    """The Go tools `bootstrap.py` builds up front; the "lazy" ones wait for go_tool()."""
    return [name for name, t in VERSIONS["go"].items() if not t.get("lazy")]


def _crd_spec() -> str:
    if os.environ.get("LLM_CHARTS_CRDS_DIR"):
        return "(LLM_CHARTS_CRDS_DIR)"
    return " ".join(f"{p['module']}@{p['version']}" for p in VERSIONS["crds"].values())


def _stamp(name: str) -> str:
    """What a built binary was built from; bump BUILD_RECIPE when the build flags change."""
    return f"{_spec(name)} recipe={BUILD_RECIPE}"


def tool_id(name: str) -> str:
    """What a Go tool is built from (pin and recipe), without building it: an input of the image
    tags that carry it (tools/stack/images.py)."""
    return _stamp(name)


def _module_dir(module: str, version: str) -> Path:
    """Download one exact module version from the proxy; return its (read-only) source dir."""
    proc = subprocess.run([_go(), "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True)
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "Dir" not in info:
        raise ToolError(
            f"`go mod download {module}@{version}` failed (is the Go module proxy reachable? "
            f"GOPROXY={os.environ.get('GOPROXY', 'default')}): {info.get('Error') or proc.stderr[-2000:]}"
        )
    return Path(info["Dir"])


def module_source(name: str) -> Path:
    """The (read-only) source folder of a pinned Go tool's module, for the files it ships besides
    its code (Argo CD's install manifests)."""
    t = VERSIONS["go"][name]
    return _module_dir(t["module"], t["version"])


def go_tool(name: str, *, build: bool = True) -> Path:
    """Path to a pinned Go tool, building it on first use.

    Built as `go mod download` + `go build` in a copy of the module rather than
    `go install mod@version`: the latter also asks the proxy for the module's
    version list (deprecation check), which the proxy refuses for some modules
    (chart-testing answers 403).
    """
    t = VERSIONS["go"][name]
    target = _target_dir(name) / name
    stamp = _target_dir(name) / f".{name}.version"

    def built() -> bool:
        return target.exists() and stamp.exists() and stamp.read_text().strip() == _stamp(name)

    if built():
        return target
    if not build:
        raise ToolError(f"{name} ({_spec(name)}) is not built yet: run `python3 tools/bootstrap.py`.")
    # .ci/run's prebuild and the e2e may want the same tool at once: one builds, the other waits.
    with progress.exclusive(target, f"{name} ({_spec(name)})"):
        if built():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # GOWORK=off: a module zip may carry its go.work (Prometheus' does), which `go build` would follow.
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOWORK="off")
        tags = ["-tags", t["tags"]] if t.get("tags") else []
        if "dir" in t:
            src = REPO / t["dir"]
            _log(f"building {name} from {t['dir']} (its go.mod; minutes cold, cached afterwards)")
            env["GOFLAGS"] = "-mod=readonly"  # the committed go.sum, never rewritten
            ldflags = "-s -w"
        else:
            src = (
                target.parent.parent / "src" / f"{name}-{t['version']}"
                if t.get("cache")
                else tools_dir() / "src" / name
            )
            _log(f"building {name} {t['version']} from {t['module']} (a few minutes cold, cached afterwards)")
            if src.exists():
                shutil.rmtree(src)
            shutil.copytree(_module_dir(t["module"], t["version"]), src)
            for p in [src, *src.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)
            ldflags = _ldflags(name, t["version"], src)
        started = time.monotonic()
        proc = subprocess.run(
            [_go(), "build", "-trimpath", *tags, "-ldflags", ldflags, "-o", str(target), t["package"]],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ToolError(f"building {name} failed:\n{proc.stderr[-3000:]}")
        if "dir" not in t:
            shutil.rmtree(src)
        _log(f"built {name} in {time.monotonic() - started:.0f} s")
        stamp.write_text(_stamp(name) + "\n")
    return target


def _ldflags(name: str, version: str, src: Path) -> str:
    """The linker flags of the tool's own release build (its Makefile).

    Helm prints its version from one; Helm 3 also takes its default Kubernetes
    version (for `helm template` and lint) from the client-go it was built with,
    and falls back to 1.20 without these flags.
    """
    flags = ["-s", "-w"]
    if name == "helm4":
        flags.append(f"-X helm.sh/helm/v4/internal/version.version={version}")
    if name == "argocd":  # `argocd version`, and the version its components report
        flags.append(f"-X github.com/argoproj/argo-cd/v3/common.version={version.lstrip('v')}")
        flags.append("-X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean")
    if name == "traefik":
        flags.append(f"-X github.com/traefik/traefik/v3/pkg/version.Version={version}")
    if name == "promtool":  # `promtool --version`; the module v0.316.0 is Prometheus 3.16.0
        flags.append(f"-X github.com/prometheus/common/version.Version={version}")
    if name == "helm":
        flags.append(f"-X helm.sh/helm/v3/internal/version.version={version}")
        match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", (src / "go.mod").read_text(), re.M)
        if not match:
            raise ToolError("helm's go.mod names no k8s.io/client-go version")
        for pkg in ("pkg/lint/rules", "pkg/chartutil"):
            flags.append(f"-X helm.sh/helm/v3/{pkg}.k8sVersionMajor=1")
            flags.append(f"-X helm.sh/helm/v3/{pkg}.k8sVersionMinor={match.group(1)}")
    return " ".join(flags)


def ct_config_dir() -> Path:
    """chart-testing's schema and lint config, copied from its module source."""
    t = VERSIONS["go"]["ct"]
    dest = tools_dir() / "etc" / "ct"
    if (dest / "chart_schema.yaml").exists():
        return dest
    src = _module_dir(t["module"], t["version"]) / "etc"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("chart_schema.yaml", "lintconf.yaml"):
        shutil.copyfile(src / name, dest / name)
    return dest


def crds_dir(*, fetch: bool = True) -> Path:
    """The folder of third-party CRD files: $LLM_CHARTS_CRDS_DIR when set, else the pinned ones."""
    override = os.environ.get("LLM_CHARTS_CRDS_DIR")
    if override:
        path = Path(override).resolve()
        if not path.is_dir():
            raise ToolError(
                f"LLM_CHARTS_CRDS_DIR={override}: no such folder. Point it at a folder of "
                "CustomResourceDefinition YAML files, or unset it to use the pinned CRDs "
                "(tools/versions.json)."
            )
        return path
    return pinned_crds(fetch=fetch)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned_crds(*, fetch: bool = True) -> Path:
    """The CRDs of tools/versions.json in <tools dir>/crds/<source>/, fetched and verified on first use.

    Cached files are checked against their sha256 on every call (a few MB: milliseconds), so a
    changed pin or an edited copy is fetched again; a module whose file does not match its pin
    is an error, never a warning.
    """
    dest = tools_dir() / "crds"
    pins = VERSIONS["crds"]
    for name, pin in pins.items():
        folder = dest / name
        wanted = {folder / Path(rel).name: sha for rel, sha in pin["files"].items()}
        if all(f.is_file() and _sha256(f) == sha for f, sha in wanted.items()):
            continue
        if not fetch:
            raise ToolError(
                f"CRDs {name} ({pin['module']}@{pin['version']}) are not fetched yet: run `python3 tools/bootstrap.py`."
            )
        _log(f"fetching {name} CRDs from {pin['module']}@{pin['version']}")
        src = _module_dir(pin["module"], pin["version"])
        for rel, sha in pin["files"].items():  # every file of the source first, so none is copied on a mismatch
            file = src / rel
            if not file.is_file():
                raise ToolError(
                    f'{pin["module"]}@{pin["version"]} has no {rel}: fix its entry under "crds" in tools/versions.json.'
                )
            actual = _sha256(file)
            if actual != sha:
                raise ToolError(
                    f"{rel} of {pin['module']}@{pin['version']} has sha256 {actual}, but tools/versions.json "
                    f"pins {sha}. Nothing was copied. If the new file is the one you want (a new version), "
                    "check it and put its sha256 into tools/versions.json."
                )
        folder.mkdir(parents=True, exist_ok=True)
        for rel in pin["files"]:
            file = src / rel
            tmp = folder / f".{file.name}.{os.getpid()}.tmp"
            shutil.copyfile(file, tmp)
            tmp.chmod(0o644)
            tmp.replace(folder / file.name)  # atomic: a concurrent reader sees the old or the new file
        for extra in set(folder.glob("*.yaml")) - set(wanted):
            extra.unlink()
    for stale in (p for p in dest.iterdir() if p.is_dir() and p.name not in pins):
        shutil.rmtree(stale)  # a source dropped from versions.json must not stay in the schemas
    return dest


# Held across each check-and-install: .ci/run's prebuild and the nox sessions beside it both
# install packages, and two apt-get at once fail on dpkg's lock. DPkg::Lock::Timeout covers an
# apt-get of someone else.
APT_LOCK = REPO / "build" / "apt-get"
APT_GET = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]


@progress.exclusively(APT_LOCK, "apt-get")
def debian_packages(packages: list[str], *, purpose: str) -> None:
    """Make sure Debian packages are installed; install them as root on Debian."""
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    hint = f"apt-get install -y {' '.join(missing)}"
    if not Path("/etc/debian_version").exists():
        raise ToolError(
            f"{purpose} needs: {', '.join(missing)} (Debian package names). Install the equivalents for your system."
        )
    if os.geteuid() != 0:
        raise ToolError(f"{purpose} needs Debian packages that are missing; run as root: {hint}")
    _log(f"installing Debian packages for {purpose}: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*APT_GET, "update", "-qq"], env=env, check=True)
    proc = subprocess.run(
        [*APT_GET, "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ToolError(f"`{hint}` failed:\n{proc.stderr[-2000:]}")


def _dpkg_installed(pkg: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def ensure_all() -> dict[str, Path]:
    paths = {name: go_tool(name) for name in eager_tools()}
    ct_config_dir()
    paths["crds"] = crds_dir()
    return paths


def main(argv: list[str]) -> int:
    check = "--check" in argv
    try:
        if check:
            for name in eager_tools():
                print(f"{name:12} {go_tool(name, build=False)}")
            print(f"{'crds':12} {crds_dir(fetch=False)}")
        else:
            for name, path in ensure_all().items():
                print(f"{name:12} {path}  {_spec(name) if name in VERSIONS['go'] else _crd_spec()}")
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

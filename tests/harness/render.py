"""The one way tests render a chart: `render_chart(...)`, through the real helm CLI."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from . import paths, tools

HELM_VERSIONS = ("helm3", "helm4")


class HelmError(RuntimeError):
    """helm exited non-zero; `stderr` holds what it said."""

    def __init__(self, cmd: list[str], stderr: str):
        self.cmd = cmd
        self.stderr = stderr
        super().__init__(f"{' '.join(cmd[:3])} ... failed:\n{stderr}")


def helm_binary(helm: str = "helm3") -> str:
    if helm not in HELM_VERSIONS:
        raise ValueError(f"helm must be one of {HELM_VERSIONS}, not {helm!r}")
    return str(tools.tool("helm" if helm == "helm3" else "helm4"))


def run_helm(args: list[str], *, helm: str = "helm3", check: bool = True) -> subprocess.CompletedProcess:
    cmd = [helm_binary(helm), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HelmError(cmd, proc.stderr)
    return proc


@functools.cache
def build_dependencies(chart_dir: str) -> None:
    """`helm dependency build` once per chart and test process (file:// library chart).

    Under a file lock: two processes building into the same charts/ folder
    (nox sessions, a developer's second pytest) would otherwise collide.
    """
    chart = Path(chart_dir)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    if not meta.get("dependencies"):
        return
    with _chart_lock(chart, fcntl.LOCK_EX):
        run_helm(["dependency", "build", "--skip-refresh", str(chart)])


@contextlib.contextmanager
def _chart_lock(chart: Path, mode: int):
    """Exclusive while charts/ is rebuilt, shared while helm reads it."""
    locks = paths.BUILD / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{chart.name}.lock", "a") as lock:
        fcntl.flock(lock, mode)
        yield


def chart_path(chart: str | Path) -> Path:
    path = Path(chart)
    if not path.is_absolute() and not path.exists():
        path = paths.CHARTS / chart
    return path.resolve()


def render_chart(
    chart: str | Path,
    values: dict | None = None,
    *,
    values_files: Iterable[str | Path] = (),
    release: str = "test",
    namespace: str = "llm",
    kube_version: str | None = None,
    api_versions: Iterable[str] = (),
    helm: str = "helm3",
    show_only: Iterable[str] = (),
    extra_args: Iterable[str] = (),
) -> list[dict]:
    """Render a chart with `helm template` and return its manifests, parsed.

    values_files are applied first, then `values` (as the last -f), the same
    precedence as `helm install -f a.yaml -f b.yaml`. Raises HelmError with
    helm's stderr when rendering fails.
    """
    return parse_manifests(
        render_text(
            chart,
            values,
            values_files=values_files,
            release=release,
            namespace=namespace,
            kube_version=kube_version,
            api_versions=api_versions,
            helm=helm,
            show_only=show_only,
            extra_args=extra_args,
        )
    )


def render_text(
    chart: str | Path,
    values: dict | None = None,
    *,
    values_files: Iterable[str | Path] = (),
    release: str = "test",
    namespace: str = "llm",
    kube_version: str | None = None,
    api_versions: Iterable[str] = (),
    helm: str = "helm3",
    show_only: Iterable[str] = (),
    extra_args: Iterable[str] = (),
) -> str:
    """Same as render_chart, but returns helm's raw output."""
    path = chart_path(chart)
    build_dependencies(str(path))
    args = ["template", release, str(path), "--namespace", namespace]
    for f in values_files:
        args += ["--values", str(f)]
    if kube_version:
        args += ["--kube-version", kube_version]
    for api in api_versions:
        args += ["--api-versions", api]
    for template in show_only:
        args += ["--show-only", template]
    args += list(extra_args)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as tmp:
        if values is not None:
            yaml.safe_dump(values, tmp)
            tmp.flush()
            args += ["--values", tmp.name]
        with _chart_lock(path, fcntl.LOCK_SH):
            return run_helm(args, helm=helm).stdout


def parse_manifests(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Manifests of one kind (and name, when given)."""
    return [m for m in manifests if m.get("kind") == kind and (name is None or m["metadata"]["name"] == name)]


def get(manifests: list[dict], kind: str, name: str) -> dict:
    """Exactly one manifest of this kind and name, or AssertionError listing what exists."""
    found = find(manifests, kind, name)
    if len(found) != 1:
        have = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
        raise AssertionError(f"expected one {kind}/{name}, found {len(found)}; rendered: {have}")
    return found[0]

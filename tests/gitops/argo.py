"""Render an Argo CD Application from this checkout the way Argo CD's repo server does.

What Argo CD does with a Helm source, and what `render_application` mirrors:
  - the chart is `path` inside the repository (here: this checkout);
  - `helm.valueFiles`: `$<ref>/file` is resolved in the source that has `ref: <ref>` (this
    repository: its root, or `values_root` when a test swaps the shared files), any other path is
    relative to the chart; a missing file is an error unless `ignoreMissingValueFiles`;
  - then `helm.valuesObject` (or, when absent, the `helm.values` string) as the last values file;
  - then `helm.parameters` as `--set` (`--set-string` when forceString) and `fileParameters` as
    `--set-file`, which beat every file;
  - release name: `helm.releaseName`, default the Application's name; namespace: `helm.namespace`,
    default `destination.namespace`; `kubeVersion`/`apiVersions` when set;
  - a `directory` source (or a path without Chart.yaml) is plain YAML files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness import paths
from harness.render import HELM_VERSIONS, parse_manifests, render_chart

REPO = paths.REPO


class ApplicationError(AssertionError):
    pass


def sources(app: dict) -> list[dict]:
    spec = app["spec"]
    if spec.get("sources"):
        return spec["sources"]
    return [spec["source"]]


def refs(app: dict) -> dict[str, dict]:
    return {s["ref"]: s for s in sources(app) if s.get("ref")}


def _in_repo(path: Path, what: str) -> Path:
    path = path.resolve()
    if REPO.resolve() not in (path, *path.parents):
        raise ApplicationError(f"{what}: {path} is outside the repository")
    return path


def value_files(app: dict, source: dict, values_root: Path | None = None) -> list[Path]:
    """The source's valueFiles as local paths, `$ref/...` resolved like Argo CD resolves them."""
    name = app["metadata"]["name"]
    helm = source.get("helm") or {}
    chart = REPO / source["path"]
    out = []
    for entry in helm.get("valueFiles") or []:
        if entry.startswith("$"):
            ref, _, rest = entry[1:].partition("/")
            if ref not in refs(app):
                raise ApplicationError(
                    f"{name}: valueFiles entry {entry!r} names ref {ref!r}, but no source has `ref: {ref}`"
                )
            root = values_root or REPO
            path = root / rest if values_root else _in_repo(root / rest, f"{name}: {entry}")
        else:
            path = _in_repo(chart / entry, f"{name}: {entry}")
        if not path.is_file():
            if helm.get("ignoreMissingValueFiles"):
                continue
            raise ApplicationError(f"{name}: value file {entry!r} not found ({path})")
        out.append(path)
    return out


def helm_arguments(app: dict, source: dict, values_root: Path | None = None) -> dict:
    """Keyword arguments of render_chart for one Helm source of the Application."""
    name = app["metadata"]["name"]
    helm = source.get("helm") or {}
    values = helm.get("valuesObject")
    if values is None and helm.get("values"):
        values = yaml.safe_load(helm["values"])
    extra = []
    for p in helm.get("parameters") or []:
        flag = "--set-string" if p.get("forceString") else "--set"
        extra += [flag, f"{p['name']}={p['value']}"]
    for p in helm.get("fileParameters") or []:
        extra += ["--set-file", f"{p['name']}={_in_repo(REPO / source['path'] / p['path'], name)}"]
    if helm.get("skipCrds"):
        extra.append("--skip-crds")
    if helm.get("skipSchemaValidation"):
        extra.append("--skip-schema-validation")
    kube = helm.get("kubeVersion")
    return {
        "chart": _in_repo(REPO / source["path"], f"{name}: path"),
        "values": values,
        "values_files": value_files(app, source, values_root),
        "release": helm.get("releaseName") or name,
        "namespace": helm.get("namespace") or app["spec"]["destination"]["namespace"],
        "kube_version": (f"v{kube}" if kube and not kube.startswith("v") else kube),
        "api_versions": helm.get("apiVersions") or (),
        "extra_args": extra,
    }


def render_application(
    app: dict, *, values_root: Path | None = None, helm: str = "helm3", kube_version: str | None = None, api_versions=()
) -> list[dict]:
    """Every manifest the Application deploys (all of its sources that have a path)."""
    if helm not in HELM_VERSIONS:
        raise ValueError(helm)
    out: list[dict] = []
    for source in sources(app):
        if source.get("ref") and not source.get("path"):
            continue  # a values-only source
        path = _in_repo(REPO / source["path"], app["metadata"]["name"])
        if source.get("directory") is not None or not (path / "Chart.yaml").is_file():
            pattern = "**/*" if (source.get("directory") or {}).get("recurse") else "*"
            for f in sorted(path.glob(pattern)):
                if f.suffix in (".yaml", ".yml", ".json") and f.is_file():
                    out += parse_manifests(f.read_text())
            continue
        args = helm_arguments(app, source, values_root)
        if kube_version and not args["kube_version"]:
            args["kube_version"] = kube_version
        args["api_versions"] = [*args["api_versions"], *api_versions]
        out += render_chart(args.pop("chart"), args.pop("values"), helm=helm, **args)
    return out

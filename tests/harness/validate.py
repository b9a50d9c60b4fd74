"""Strict schema validation of rendered manifests.

Built-in kinds: kubernetes-validate's strict schemas (unknown fields rejected).
Custom resources: the official CRD's openAPIV3Schema, read from the CRD folder
(paths.crds_dir(): the CRDs pinned in tools/versions.json), made strict the way the API server's strict field
validation is (unknown fields rejected unless the schema preserves them).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from . import paths, tools

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
OLDEST_KUBE = "1.25"


def newest_kube() -> str:
    """Newest Kubernetes minor version the validator has schemas for, as "1.N"."""
    return ".".join(kubernetes_validate.latest_version().split(".")[:2])


KUBE_VERSIONS = (OLDEST_KUBE, newest_kube())
NAME_LIMIT = 63
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose name becomes a DNS label (and so must fit in 63 characters).
DNS_LABEL_KINDS = {"Service", "Namespace"}


class ManifestError(AssertionError):
    pass


def _ident(m: dict) -> str:
    return f"{m.get('kind')}/{(m.get('metadata') or {}).get('name')}"


@functools.cache
def crd_schemas(crds_dir: str | None = None) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, from every CRD file in the folder."""
    try:
        root = Path(crds_dir) if crds_dir else paths.crds_dir()
    except tools.ToolError as exc:
        raise ManifestError(str(exc)) from None
    if not root.is_dir():
        raise ManifestError(
            f"CRD folder {root} not found. Set LLM_CHARTS_CRDS_DIR to a folder of "
            "CustomResourceDefinition YAML files, or leave it unset for the pinned CRDs."
        )
    out: dict[tuple[str, str], dict] = {}
    for path in sorted(root.rglob("*.yaml")):
        # libyaml's loader when present: the Istio CRD file alone is megabytes.
        for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    api = f"{spec['group']}/{version['name']}"
                    out[(api, spec["names"]["kind"])] = _strict(schema, top=True)
    return out


def _strict(schema: dict, top: bool = False) -> dict:
    """Reject unknown fields wherever the CRD lists properties and does not preserve unknowns."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for key, value in node.items():
                if key in ("properties", "patternProperties", "definitions"):
                    for sub in value.values():
                        walk(sub)
                elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                    walk(value)
                elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                    for sub in value:
                        walk(sub)
        return node

    walk(s)
    if top:
        props = s.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"type": "object"}
    return s


def validate_manifest(m: dict, kube_version: str) -> None:
    """Raise ManifestError when the manifest does not pass strict validation."""
    key = (m.get("apiVersion"), m.get("kind"))
    crds = crd_schemas()
    if key in crds:
        errors = sorted(jsonschema.Draft7Validator(crds[key]).iter_errors(m), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            raise ManifestError(f"{_ident(m)}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
        return
    try:
        kubernetes_validate.validate(m, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise ManifestError(f"{_ident(m)} (Kubernetes {kube_version}): {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise ManifestError(
            f"{_ident(m)}: no schema for {m.get('apiVersion')} {m.get('kind')} in Kubernetes "
            f"{kube_version} and no CRD for it in {paths.crds_dir()}"
        ) from None


def check_names(manifests: list[dict]) -> list[str]:
    """Problems with object names: over 63 characters, or not a DNS label where one is needed."""
    problems = []
    for m in manifests:
        name = (m.get("metadata") or {}).get("name", "")
        if len(name) > NAME_LIMIT:
            problems.append(f"{_ident(m)}: name has {len(name)} characters (limit {NAME_LIMIT})")
        if m.get("kind") in DNS_LABEL_KINDS and not DNS_LABEL.match(name):
            problems.append(f"{_ident(m)}: name is not a DNS label")
        for label, value in ((m.get("metadata") or {}).get("labels") or {}).items():
            if len(str(value)) > NAME_LIMIT:
                problems.append(f"{_ident(m)}: label {label} value is over {NAME_LIMIT} characters")
    return problems


# Template syntax that belongs in the output: Prometheus alert templates ({{ $labels.model }},
# {{ $value | humanizePercentage }}) and Grafana legends ({{model}}). A Helm leftover such as
# {{ .Values.x }}, {{- include ... }} or {{ $ns }} matches neither.
_WANTED_BRACES = re.compile(r"\{\{ ?(\$(labels|value|externalLabels)\b[^{}]*|[a-zA-Z_][a-zA-Z0-9_]*) ?\}\}")


def check_unrendered(text: str) -> list[str]:
    """Lines that still hold template braces, once Prometheus' and Grafana's own are taken out."""
    problems = []
    for i, line in enumerate(text.splitlines(), 1):
        rest = _WANTED_BRACES.sub("", line)
        if "{{" in rest or "}}" in rest:
            problems.append(f"line {i}: {line.strip()}")
    return problems

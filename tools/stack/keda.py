"""KEDA in the e2e cluster: the operator and its metrics apiserver, built from the Go module.

The version is the one tools/versions.json pins for the KEDA CRDs the unit tests validate
against (`crds.keda`), so the running KEDA and the checked CRDs never differ. Both programs are
built in one `go build` (they share most packages) into $LLM_CHARTS_CACHE/bin/keda-<version>,
from a copy of the module in $LLM_CHARTS_CACHE/src; the image is a single layer with the two
static binaries, written as an archive (no docker build, no base image) and imported into the
cluster's containerd. The manifests are KEDA's own (config/ of the module, through `kubectl
kustomize`), without the admission webhooks (not built: `--enable-webhook-patching=false`);
the operator makes its certificates itself (`--enable-cert-rotation`, as upstream) and puts
their CA into the external.metrics APIService. That APIService (for the HPA KEDA makes to
scale 1 -> N) is installed only where the API server runs the aggregation layer
(`aggregation_layer`); the local cluster's does not, and KEDA's operator scales 0 <-> 1 itself.

    build()                      # the binaries (minutes cold, cached afterwards)
    install(cluster)             # image, CRDs, RBAC, operator, metrics apiserver; waits for both
    uninstall(cluster)           # everything but the CRDs (other tests install the same ones)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import localcluster
import progress
import yaml
from progress import step

import bootstrap

PIN = bootstrap.VERSIONS["crds"]["keda"]
MODULE, VERSION = PIN["module"], PIN["version"]
NAMESPACE = "keda"
BIN = localcluster.CACHE / "bin" / f"keda-{VERSION}"
SRC = localcluster.CACHE / "src" / f"keda-{VERSION}"
PROGRAMS = {"operator": "keda", "adapter": "keda-adapter"}  # ./cmd/<dir> -> the name in the image
RECIPE = f"{MODULE}@{VERSION} ./cmd/operator ./cmd/adapter CGO_ENABLED=0 -trimpath recipe=1"
# The webhooks program is not built: its objects are left out.
SKIPPED = {("Deployment", "keda-admission"), ("Service", "keda-admission-webhooks")}
SKIPPED_KINDS = {"ValidatingWebhookConfiguration"}


def source() -> Path:
    """A writable copy of the module (its config/ holds the manifests), made once."""
    if not (SRC / "go.mod").exists():
        info = json.loads(
            subprocess.run(
                ["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"], capture_output=True, text=True, cwd="/"
            ).stdout
            or "{}"
        )
        if "Dir" not in info:
            raise RuntimeError(f"`go mod download {MODULE}@{VERSION}` failed: {info.get('Error')}")
        tmp = SRC.with_name(SRC.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(info["Dir"], tmp, symlinks=True)
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=True)
        tmp.rename(SRC)
    return SRC


@progress.exclusively(BIN, f"KEDA {VERSION}")
def build() -> dict[str, Path]:
    """The operator and the adapter, built once per pin; name in the image -> path."""
    stamp = BIN / ".version"
    out = {name: BIN / cmd for cmd, name in PROGRAMS.items()}
    if stamp.exists() and stamp.read_text().strip() == RECIPE and all(p.exists() for p in out.values()):
        return out
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOWORK="off")
    with step(f"build KEDA {VERSION} (operator + metrics apiserver) from the Go module proxy (cold: minutes)"):
        source()
        BIN.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        progress.run(
            [
                "nice",
                "-n",
                "10",
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                f"-s -w -X {MODULE}/version.Version={VERSION}",
                "-o",
                f"{BIN}/",
                *[f"./cmd/{cmd}" for cmd in PROGRAMS],
            ],
            log=localcluster.LOGS / "build-keda.log",
            cwd=SRC,
            env=env,
            name="go build keda",
        )
        progress.say(f"built KEDA in {time.monotonic() - started:.0f} s")
    stamp.write_text(RECIPE + "\n")
    return out


def image_ref() -> str:
    return f"llm-charts/keda:e2e-{hashlib.sha256(RECIPE.encode()).hexdigest()[:12]}"


def load_image() -> str:
    """The two binaries as a one-layer image in the cluster's containerd."""
    ref = image_ref()
    if localcluster.present(ref):
        return ref
    binaries = build()
    with step(f"load {ref} into the cluster's containerd"), tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "keda.tar"
        localcluster.write_docker_archive(
            archive, ref, {name: path.read_bytes() for name, path in binaries.items()}, entrypoint=["/keda"]
        )
        localcluster.import_archive(archive)
    return ref


def aggregation_layer(cluster) -> bool:
    """Whether the API server can front an aggregated API (its front-proxy CA is published):
    without it, the external metrics APIService stays unavailable, and an unavailable APIService
    makes API discovery fail for every client of the cluster."""
    data = cluster.kubectl_json("-n", "kube-system", "get", "configmap", "extension-apiserver-authentication")["data"]
    return "requestheader-client-ca-file" in data


def manifests(ref: str, *, apiservice: bool = True) -> list[dict]:
    """KEDA's config/default, pointed at `ref`, without the webhooks (and without the
    APIService unless `apiservice`: the operator then leaves it alone)."""
    config = source() / "config" / "default"
    proc = subprocess.run(["kubectl", "kustomize", str(config)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {config}: {proc.stderr}")
    docs = []
    for doc in yaml.safe_load_all(proc.stdout):
        if not doc or doc["kind"] in SKIPPED_KINDS or (doc["kind"], doc["metadata"]["name"]) in SKIPPED:
            continue
        if doc["kind"] == "APIService" and not apiservice:
            continue
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                c["image"], c["imagePullPolicy"] = ref, "IfNotPresent"
                if c["name"] == "keda-operator":
                    c["args"] = [*c.get("args", []), "--enable-webhook-patching=false"]
                    if not apiservice:
                        c["args"].append("--enable-apiservice-patching=false")
                # A small cluster: KEDA's own requests, limits that fit a 2-core node.
                c["resources"] = {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
        docs.append(doc)
    return docs


def _apply(cluster, docs: list[dict]) -> None:
    text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text, timeout=180)


def install(cluster, *, timeout: float = 300) -> None:
    """Install (or update) KEDA and wait until both Deployments are available."""
    if cluster.provider != "local":
        raise RuntimeError(
            f"KEDA's image is imported into the local cluster's containerd only; on a {cluster.provider} "
            f"cluster install KEDA {VERSION} yourself (its Helm chart kedacore/keda) before the e2e"
        )
    ref = load_image()
    aggregation = aggregation_layer(cluster)
    docs = manifests(ref, apiservice=aggregation)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    with step(f"install KEDA {VERSION} (namespace {NAMESPACE})"):
        _apply(cluster, crds)
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=120s",
            *[f"crd/{d['metadata']['name']}" for d in crds], timeout=150,
        )  # fmt: skip
        existed = cluster.kubectl("-n", NAMESPACE, "get", "deployment", "keda-operator", check=False).returncode == 0
        _apply(cluster, [d for d in docs if d["kind"] != "CustomResourceDefinition"])
        if existed:
            # A fresh operator: its HTTP scalers share one keep-alive pool keyed by host name, and a
            # connection kept from an earlier run (a namespace of the same name, since deleted) went
            # on answering 404 for the new ScaledObject's metrics-api URL.
            cluster.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/keda-operator")
        for name in ("keda-operator", "keda-metrics-apiserver"):
            cluster.kubectl(
                "-n", NAMESPACE, "rollout", "status", f"deployment/{name}", f"--timeout={int(timeout)}s",
                timeout=timeout + 30,
            )  # fmt: skip


def uninstall(cluster) -> None:
    """Everything KEDA added but its CRDs (the e2e's `crds` fixture installs the same pinned ones,
    and another test module may still use them): the APIService first, so API discovery never
    points at a missing server."""
    cluster.kubectl("delete", "apiservice", "v1beta1.external.metrics.k8s.io", "--ignore-not-found", check=False)
    docs = [d for d in manifests(image_ref()) if d["kind"] != "CustomResourceDefinition"]
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    cluster.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", "-", input=text, check=False, timeout=300)

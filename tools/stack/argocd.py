"""A real Argo CD in the cluster, for the GitOps e2e: Argo CD's own core install
(`manifests/core-install.yaml` of the pinned module: the CRDs, the application controller, the
repo server, Redis, their RBAC and NetworkPolicies), with three changes for a machine without a
container registry or a UI:

- the images are the e2e's (images/argocd: the binary built from the Go module proxy;
  images/redis: Debian's redis-server), pulled IfNotPresent;
- no ApplicationSet controller (nothing here uses ApplicationSets; one process less on 2 cores);
- GnuPG off (`ARGOCD_GPG_ENABLED=false`, Argo CD's own switch): nothing here verifies commit
  signatures, and Debian's `gpg` without `gpg-agent` cannot make the repo server's keyring;
- the `default` AppProject, which Argo CD's API server creates when it starts (the Applications
  of the README use it; without the API server nothing else makes it);
- `argocd-cm` gets the Application health check docs/gitops.md recommends (read from that page,
  so the docs and the test cannot drift) and a short reconciliation period, so a commit is
  noticed in seconds rather than Argo CD's default 2-3 minutes (no webhook without the API server).

Argo CD runs in namespace `argocd`, as the README's bootstrap expects.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import yaml

_TOOLS = Path(__file__).resolve().parents[1]
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))
import progress  # noqa: E402
from progress import step  # noqa: E402

import bootstrap  # noqa: E402

from .providers import Cluster  # noqa: E402

REPO = _TOOLS.parent
NAMESPACE = "argocd"
RECONCILIATION = "10s"
UPSTREAM_IMAGES = {"quay.io/argoproj/argocd": "argocd", "public.ecr.aws/docker/library/redis": "redis"}
DROPPED = {("Deployment", "argocd-applicationset-controller")}
HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"


def health_check_from_docs() -> str:
    """The Lua health check of `argoproj.io/Application` that docs/gitops.md tells users to add."""
    text = (REPO / "docs" / "gitops.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        if HEALTH_KEY in block:
            return yaml.safe_load(block)["data"][HEALTH_KEY]
    raise RuntimeError(f"docs/gitops.md has no yaml block with {HEALTH_KEY}")


def manifest(images: dict[str, str]) -> list[dict]:
    """Argo CD's core install for this cluster (images: name -> reference of argocd and redis)."""
    src = bootstrap.module_source("argocd") / "manifests" / "core-install.yaml"
    docs = []
    for doc in yaml.safe_load_all(src.read_text()):
        if not doc or (doc["kind"], doc["metadata"]["name"]) in DROPPED:
            continue
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            repo = c["image"].rsplit(":", 1)[0]
            if repo not in UPSTREAM_IMAGES:
                raise RuntimeError(f"Argo CD's core install uses image {c['image']}, which the e2e does not build")
            c["image"] = images[UPSTREAM_IMAGES[repo]]
            c["imagePullPolicy"] = "IfNotPresent"
            if c["name"] in ("argocd-repo-server", "argocd-application-controller"):
                c.setdefault("env", []).append({"name": "ARGOCD_GPG_ENABLED", "value": "false"})
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "argocd-cm":
            doc["data"] = {
                **(doc.get("data") or {}),
                HEALTH_KEY: health_check_from_docs(),
                "timeout.reconciliation": RECONCILIATION,
                "timeout.reconciliation.jitter": "0s",
            }
        docs.append(doc)
    docs.append(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default"},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        }
    )
    return docs


def install(cluster: Cluster, images: dict[str, str]) -> float:
    """Install (or update) Argo CD and wait until its components are ready; returns the seconds."""
    start = time.monotonic()
    with step(f"install Argo CD {bootstrap.VERSIONS['go']['argocd']['version']} into namespace {NAMESPACE}"):
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        # Server-side: the Application CRD is too big for client-side apply's annotation.
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            NAMESPACE,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifest(images)}),
            timeout=300,
        )
        for workload in (
            "deployment/argocd-redis",
            "deployment/argocd-repo-server",
            "statefulset/argocd-application-controller",
        ):
            cluster.kubectl("-n", NAMESPACE, "rollout", "status", workload, "--timeout=300s", timeout=330)
    return time.monotonic() - start


def applications(cluster: Cluster) -> dict[str, dict]:
    items = cluster.kubectl_json("-n", NAMESPACE, "get", "applications.argoproj.io")["items"]
    return {a["metadata"]["name"]: a for a in items}


def synced_revisions(app: dict) -> list[str]:
    """The commits an Application is synced to: `revision` (one source) or `revisions` (several)."""
    sync = app.get("status", {}).get("sync", {})
    return sync.get("revisions") or ([sync["revision"]] if sync.get("revision") else [])


def summary(app: dict) -> str:
    st = app.get("status", {})
    op = st.get("operationState", {})
    conditions = "; ".join(c.get("message", "") for c in st.get("conditions", []))
    return (
        f"{app['metadata']['name']}: sync={st.get('sync', {}).get('status')} "
        f"revisions={[r[:10] for r in synced_revisions(app)]} health={st.get('health', {}).get('status')} "
        f"op={op.get('phase')} {op.get('message', '')[:300]} {conditions[:300]}"
    )


def wait_synced_healthy(cluster: Cluster, names: set[str], revision: str, timeout: float = 900) -> dict[str, dict]:
    """Until every named Application is Synced to `revision` and Healthy; returns them."""

    def done() -> dict[str, dict] | None:
        apps = applications(cluster)
        ok = all(
            n in apps
            and apps[n].get("status", {}).get("sync", {}).get("status") == "Synced"
            and revision in synced_revisions(apps[n])
            and apps[n]["status"].get("health", {}).get("status") == "Healthy"
            for n in names
        )
        return apps if ok else None

    return progress.wait_for(  # type: ignore[return-value]
        f"Applications {', '.join(sorted(names))} Synced to {revision[:10]} and Healthy",
        done,
        timeout=timeout,
        detail=lambda: "\n".join(summary(a) for a in applications(cluster).values()),
    )


def uninstall(cluster: Cluster, images: dict[str, str]) -> None:
    """Remove Argo CD: its namespace and its cluster-wide RBAC (the CRDs stay: other tests and a
    user's Argo CD may use them)."""
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300, check=False)
    for doc in manifest(images):
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False)

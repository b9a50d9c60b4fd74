"""Traefik v3 as the Gateway API implementation of the e2e: the binary built from the Go module
proxy (images/traefik), its Kubernetes Gateway provider on, one `web` entry point, and the
RBAC Traefik documents for that provider (docs/content/reference/dynamic-configuration/
kubernetes-gateway-rbac.yml of the pinned module), bound to this deployment's ServiceAccount.

Traefik's timeouts are left at its defaults (entry point readTimeout 60 s for reading a request,
writeTimeout and the backend's responseHeaderTimeout 0 = none, idleTimeout 180 s), so the e2e
proves that a long generation is not cut with what a user gets out of the box.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

_TOOLS = Path(__file__).resolve().parents[1]
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))
from progress import step  # noqa: E402

import bootstrap  # noqa: E402

from .providers import Cluster  # noqa: E402

NAME = "traefik"
CONTROLLER = "traefik.io/gateway-controller"
WEB_PORT = 8000  # a Gateway listener binds to the entry point of the same port


def manifest(namespace: str, image: str, gateway_class: str) -> list[dict]:
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "llm-charts-e2e"}
    rbac_file = (
        bootstrap.module_source("traefik") / "docs/content/reference/dynamic-configuration/kubernetes-gateway-rbac.yml"
    )
    role, binding = (d for d in yaml.safe_load_all(rbac_file.read_text()) if d)
    role["metadata"] = {"name": f"{gateway_class}-gateway", "labels": labels}
    binding["metadata"] = {"name": f"{gateway_class}-gateway", "labels": labels}
    binding["roleRef"]["name"] = role["metadata"]["name"]
    binding["subjects"] = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    args = [
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        f"--entryPoints.web.address=:{WEB_PORT}",
        "--entryPoints.traefik.address=:9000",
        "--ping=true",
        "--providers.kubernetesgateway=true",
        "--log.level=INFO",
    ]
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{"name": "web", "containerPort": WEB_PORT}, {"name": "admin", "containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "admin"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": namespace}},
        role,
        binding,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": gateway_class, "labels": labels},
            "spec": {"controllerName": CONTROLLER},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"serviceAccountName": NAME, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"app.kubernetes.io/name": NAME},
                "ports": [{"name": "web", "port": WEB_PORT, "targetPort": "web"}],
            },
        },
    ]


def install(cluster: Cluster, namespace: str, image: str, gateway_class: str) -> None:
    with step(
        f"install Traefik {bootstrap.VERSIONS['go']['traefik']['version']} into {namespace} (GatewayClass {gateway_class})"
    ):
        cluster.kubectl("create", "namespace", namespace, check=False)
        docs = manifest(namespace, image, gateway_class)
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        cluster.kubectl("-n", namespace, "rollout", "status", f"deployment/{NAME}", "--timeout=180s", timeout=200)


def uninstall(cluster: Cluster, namespace: str, image: str, gateway_class: str) -> None:
    for doc in manifest(namespace, image, gateway_class):
        if "namespace" not in doc["metadata"]:  # cluster-wide; the namespace goes with its own
            cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False)

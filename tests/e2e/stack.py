"""The stack on a cluster, installed the way a user does: Helm 3 CLI, one model list for every chart.

The model list is the repository's models.yaml, made runnable without GPUs (gpuRequestCount 0,
small caches). Image overrides only where the default image is unreachable: the model servers
run the mock OpenAI backend (which accepts the real vLLM / llama-server flags, so the charts'
rendered arguments are exercised), the gateway runs Debian's nginx + Lua (images/gateway).
Open WebUI's image is unreachable too: its chart goes through a server-side dry run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import yaml

from . import images, progress
from .progress import say, step
from .providers import Cluster

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from harness import paths, tools  # noqa: E402

VALUES = Path(__file__).with_name("values")
MODEL_CHARTS = ("vllm-models", "ramalama-models")
INSTALLED = (*MODEL_CHARTS, "api-gateway")  # openwebui: server-side dry run only
# Where the GGUF files live on the node (a hostPath the fixture creates with a one-shot pod).
GGUF_DIR = "/var/lib/llm-charts-e2e/models"


def helm_bin() -> str:
    return str(tools.tool("helm"))


def e2e_models(extra: list[dict] = ()) -> dict:
    """models.yaml of the repository, for a CPU-only cluster, plus `extra` entries."""
    doc = yaml.safe_load((REPO / "models.yaml").read_text())
    models = []
    for m in [*doc["models"], *extra]:
        m = copy.deepcopy(m)
        if "gguf" not in m:
            m["gpuRequestCount"] = 0
            m["pvcSize"] = "1Gi"
        else:
            m["gpuRequestCount"] = 0
        models.append(m)
    return {"models": models, "global": doc.get("global", {})}


class Stack:
    """The installed stack in one namespace: helm, kubectl and requests through the gateway."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path):
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.images: dict[str, str] = {}
        self.extra_models: list[dict] = []
        self.extra_namespaces: set[str] = set()  # created for dry runs; removed with the stack
        workdir.mkdir(parents=True, exist_ok=True)

    # -- helm ----------------------------------------------------------------------------------
    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [helm_bin(), *args, *self.cluster.kube_args()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:3])} failed:\n{proc.stderr}{proc.stdout[-2000:]}")
        return proc

    def models_file(self) -> Path:
        path = self.workdir / "models.yaml"
        path.write_text(yaml.safe_dump(e2e_models(self.extra_models), sort_keys=False))
        return path

    def image_values(self) -> Path:
        """Image overrides, as a values file every chart accepts only its part of."""
        def split(ref: str) -> tuple[str, str]:
            repo, tag = ref.rsplit(":", 1)
            return repo, tag
        mock_repo, mock_tag = split(self.images["mock-openai"])
        gw_repo, gw_tag = split(self.images["gateway"])
        per_chart = {
            "vllm-models": {"image": {"repository": mock_repo, "tag": mock_tag, "pullPolicy": "IfNotPresent"}},
            "ramalama-models": {"accelerators": {"cpu": {"repository": mock_repo}},
                                "image": {"tag": mock_tag, "pullPolicy": "IfNotPresent"},
                                "hostPath": {"path": GGUF_DIR}},
            "api-gateway": {"image": {"repository": gw_repo, "tag": gw_tag, "pullPolicy": "IfNotPresent"}},
        }
        # The charts' `helm test` Pods run curl from the mock image (no registry to pull curlimages/curl).
        for values in per_chart.values():
            values["tests"] = {"image": {"repository": mock_repo, "tag": mock_tag, "pullPolicy": "IfNotPresent"}}
        for chart, values in per_chart.items():
            (self.workdir / f"{chart}-images.yaml").write_text(yaml.safe_dump(values))
        return self.workdir

    def values_args(self, chart: str) -> list[str]:
        args = ["-f", str(self.models_file())]
        for f in (VALUES / f"{chart}.yaml", self.workdir / f"{chart}-images.yaml"):
            if f.exists():
                args += ["-f", str(f)]
        if chart == "api-gateway":
            args += ["-f", str(REPO / "images" / "gateway" / "values.yaml")]
        return args

    def install(self, chart: str, *, upgrade: bool = True, wait: bool = True) -> None:
        args = ["upgrade", "--install"] if upgrade else ["install"]
        args += [chart, str(paths.CHARTS / chart), "-n", self.namespace, *self.values_args(chart)]
        if wait:
            args += ["--wait", "--timeout", "5m"]
        with step(f"helm {args[0]} {chart} -n {self.namespace}"):
            # through progress.run: a heartbeat while --wait waits for the pods
            progress.run([helm_bin(), *args, *self.cluster.kube_args()], log=self.workdir / "helm.log",
                         name=f"helm {args[0]} {chart}", timeout=660)

    def dry_run_server(self, chart: str) -> str:
        """`helm install --dry-run=server`: rendered and validated by the real API server."""
        with step(f"helm install {chart} --dry-run=server"):
            return self.helm("install", chart, str(paths.CHARTS / chart), "-n", self.namespace,
                             *self.values_args(chart), "--dry-run=server").stdout

    def template(self, chart: Path, values: Path) -> str:
        """`helm template` of a chart outside charts/ (argocd/, istio/) with `values` (and the models,
        where its schema takes them)."""
        if (chart / "Chart.lock").exists() or "dependencies" in (chart / "Chart.yaml").read_text():
            subprocess.run([helm_bin(), "dependency", "build", "--skip-refresh", str(chart)],
                           capture_output=True, text=True)
        schema = chart / "values.schema.json"
        takes_models = not schema.exists() or "models" in json.loads(schema.read_text()).get("properties", {})
        models = ["-f", str(self.models_file())] if takes_models else []
        proc = subprocess.run([helm_bin(), "template", chart.name, str(chart), "-n", self.namespace,
                               *models, "-f", str(values)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"helm template {chart.name} -f {values.name}:\n{proc.stderr}")
        return proc.stdout

    def server_dry_run_apply(self, manifest: str) -> subprocess.CompletedProcess:
        """`kubectl apply --dry-run=server --validate=strict`; namespaces it names are created first
        (a dry run cannot create them, and the API server refuses objects in a missing one)."""
        docs = [d for d in yaml.safe_load_all(manifest) if isinstance(d, dict) and d.get("kind")]
        for doc in docs:
            doc["metadata"].setdefault("namespace", self.namespace)  # as `helm install -n` would
        existing = {n["metadata"]["name"] for n in self.cluster.kubectl_json("get", "namespaces")["items"]}
        for ns in sorted({d["metadata"]["namespace"] for d in docs} - existing):
            self.cluster.kubectl("create", "namespace", ns)
            self.extra_namespaces.add(ns)
        return self.cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                    input=yaml.safe_dump_all(docs), check=False)

    # -- the stack -----------------------------------------------------------------------------
    def prepare(self) -> None:
        with step("build the test images"):
            built = images.build_all()
        for name, ref in built.items():
            self.images[name] = self.cluster.load_image(ref)
        self.image_values()
        for chart in (*INSTALLED, "openwebui"):
            proc = subprocess.run([helm_bin(), "dependency", "build", "--skip-refresh", str(paths.CHARTS / chart)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"helm dependency build {chart}:\n{proc.stderr}")
        self.cluster.kubectl("create", "namespace", self.namespace, check=False)
        self.seed_gguf()

    def seed_gguf(self) -> None:
        """Create the GGUF directory on the node with a placeholder file per GGUF model (the mock
        does not read it), through a one-shot pod, so it works on any provider."""
        files = [m["gguf"] for m in e2e_models(self.extra_models)["models"] if "gguf" in m]
        script = f"mkdir -p {GGUF_DIR} && cd {GGUF_DIR} && " + " && ".join(
            f"[ -s '{f}' ] || printf 'GGUF' > '{f}'" for f in files) + " && chmod -R a+rX /host"
        name = "e2e-seed-gguf"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": self.namespace},
               "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                        "containers": [{"name": "seed", "image": self.images["mock-openai"],
                                        "command": ["sh", "-c", script.replace(GGUF_DIR, "/host" + GGUF_DIR)],
                                        "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                                        "volumeMounts": [{"name": "host", "mountPath": "/host/var/lib"}]}],
                        "volumes": [{"name": "host", "hostPath": {"path": "/var/lib", "type": "Directory"}}]}}
        self.cluster.kubectl("-n", self.namespace, "delete", "pod", name, "--ignore-not-found", "--wait=true")
        with step(f"create {GGUF_DIR} on the node"):
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
            self.cluster.kubectl("-n", self.namespace, "wait", f"pod/{name}",
                                 "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s", timeout=150)
            self.cluster.kubectl("-n", self.namespace, "delete", "pod", name, "--wait=false")

    def install_all(self) -> None:
        for chart in INSTALLED:
            self.install(chart)

    def uninstall_all(self) -> None:
        for chart in reversed(INSTALLED):
            self.helm("uninstall", chart, "-n", self.namespace, "--wait", check=False)

    # -- looking at it -------------------------------------------------------------------------
    def pods(self, selector: str = "") -> list[dict]:
        args = ["-n", self.namespace, "get", "pods"] + (["-l", selector] if selector else [])
        return self.cluster.kubectl_json(*args)["items"]

    def deployments(self) -> list[dict]:
        return self.cluster.kubectl_json("-n", self.namespace, "get", "deployments")["items"]

    def gateway_service(self) -> str:
        return "api-gateway"

    @contextlib.contextmanager
    def gateway(self) -> Iterator[str]:
        with self.cluster.service_url(self.namespace, self.gateway_service(), 80) as url:
            yield url

    def scale(self, deployment: str, replicas: int) -> None:
        self.cluster.kubectl("-n", self.namespace, "scale", f"deployment/{deployment}", f"--replicas={replicas}")

    def wait_rollout(self, deployment: str, timeout: int = 180) -> None:
        self.cluster.kubectl("-n", self.namespace, "rollout", "status", f"deployment/{deployment}",
                             f"--timeout={timeout}s", timeout=timeout + 30)

    def diagnostics(self) -> str:
        out = [self.cluster.kubectl("-n", self.namespace, "get", "all,pvc,events", "-o", "wide",
                                    check=False).stdout]
        for pod in self.pods():
            if not all(c.get("ready") for c in pod["status"].get("containerStatuses", [{}])):
                out.append(self.cluster.kubectl("-n", self.namespace, "describe", "pod",
                                                pod["metadata"]["name"], check=False).stdout[-3000:])
                out.append(self.cluster.kubectl("-n", self.namespace, "logs", pod["metadata"]["name"],
                                                "--all-containers", "--tail=40", check=False).stdout)
        return "\n".join(out)


def wait_http(url: str, ok, timeout: float = 120) -> None:
    import requests
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=5)
            if ok(last):
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(1)
    raise TimeoutError(f"{url}: {last!r} {getattr(last, 'text', '')[:500]}")


__all__ = ["Stack", "e2e_models", "say"]

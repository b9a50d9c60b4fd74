"""The stack on a cluster, installed the way a user does: Helm 3 CLI, one model list for every chart,
real engines.

- ramalama-models: Debian's llama-server (images/llama-server) on a tiny GGUF written into the
  node's model directory under the catalog's file name;
- vllm-models: vLLM for CPUs (images/vllm-cpu) on a tiny Hugging Face Llama seeded into each
  model's cache PVC under the catalog's `huggingfaceId`, the hub unreachable (HF_HUB_OFFLINE);
- api-gateway: Debian's nginx + Lua (images/gateway) with the chart's files;
- openwebui: Open WebUI from PyPI (images/openwebui).
Image overrides and CPU sizes come from tools/stack/values/<chart>.yaml and the generated image
values; the charts' templates, arguments, probes and paths are used as they are.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

_TOOLS = Path(__file__).resolve().parents[1]
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))
import progress  # noqa: E402
from progress import say, step  # noqa: E402

import bootstrap  # noqa: E402

from . import images, models  # noqa: E402
from .providers import Cluster  # noqa: E402

REPO = _TOOLS.parent
CHARTS = REPO / "charts"
VALUES = Path(__file__).with_name("values")
MODEL_CHARTS = ("vllm-models", "ramalama-models")
# Where the GGUF files live on the node (a hostPath the seed pod creates).
GGUF_DIR = "/var/lib/llm-charts-e2e/models"
SEED_POD = "llm-charts-seed"


def helm_bin() -> str:
    return str(bootstrap.go_tool("helm"))


def needed_images(*, vllm: bool = True, openwebui: bool = True) -> list[str]:
    names = ["mock-openai", "gateway", "llama-server"]
    if vllm:
        names.append("vllm-cpu")
    if openwebui:
        names.append("openwebui")
    return names


def prebuild(*, vllm: bool = True, openwebui: bool = True) -> concurrent.futures.Future:
    """Start building the images in the background (they download while Kubernetes compiles)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(images.build_many, needed_images(vllm=vllm, openwebui=openwebui))
    pool.shutdown(wait=False)
    return future


def start_builds(
    cluster: Cluster, *, vllm: bool = True, openwebui: bool = True
) -> tuple[concurrent.futures.Future, concurrent.futures.Future | None]:
    """The slow, independent work at once: the images (downloads, pip) and, for the local cluster,
    its binaries (Go compiles). Returns (images, cluster binaries or None); wait on what you need."""
    from .providers import LocalCluster

    artifacts = None
    if isinstance(cluster, LocalCluster):
        import localcluster.artifacts

        localcluster.artifacts.preflight()  # the Debian packages both need (docker.io, debootstrap)
    built = prebuild(vllm=vllm, openwebui=openwebui)
    if isinstance(cluster, LocalCluster):
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        artifacts = pool.submit(localcluster.artifacts.ensure_all)
        pool.shutdown(wait=False)
    return built, artifacts


class Stack:
    """The installed stack in one namespace: helm, kubectl and requests through the gateway."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path, *, vllm: bool = True, openwebui: bool = True):
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.vllm = vllm
        self.openwebui = openwebui
        self.images: dict[str, str] = {}
        self.extra_models: list[dict] = []
        self.extra_namespaces: set[str] = set()  # created for dry runs; removed with the stack
        self.timings: dict[str, float] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def charts(self) -> tuple[str, ...]:
        return (*MODEL_CHARTS, "api-gateway", *(("openwebui",) if self.openwebui else ()))

    # -- helm ----------------------------------------------------------------------------------
    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [helm_bin(), *args, *self.cluster.kube_args()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:3])} failed:\n{proc.stderr}{proc.stdout[-2000:]}")
        return proc

    def catalog(self) -> dict:
        return models.catalog(self.extra_models, vllm=self.vllm)

    def models_file(self) -> Path:
        path = self.workdir / "models.yaml"
        path.write_text(yaml.safe_dump(self.catalog(), sort_keys=False))
        return path

    def image_values(self) -> None:
        """Image overrides, one values file per chart."""

        def split(name: str) -> tuple[str, str]:
            repo, tag = self.images[name].rsplit(":", 1)
            return repo, tag

        mock_repo, mock_tag = split("mock-openai")
        per_chart: dict[str, dict] = {
            "ramalama-models": {
                "accelerators": {"cpu": {"repository": split("llama-server")[0]}},
                "image": {"tag": split("llama-server")[1], "pullPolicy": "IfNotPresent"},
                "hostPath": {"path": GGUF_DIR},
            },
            "api-gateway": {"image": dict(zip(("repository", "tag"), split("gateway")), pullPolicy="IfNotPresent")},
            "vllm-models": {},
            "openwebui": {},
        }
        if "vllm-cpu" in self.images:
            per_chart["vllm-models"] = {
                "image": dict(zip(("repository", "tag"), split("vllm-cpu")), pullPolicy="IfNotPresent")
            }
        if "openwebui" in self.images:
            per_chart["openwebui"] = {
                "image": dict(zip(("repository", "tag"), split("openwebui")), pullPolicy="IfNotPresent")
            }
        # The charts' `helm test` Pods run curl from the mock image (no registry to pull curlimages/curl).
        for values in per_chart.values():
            values["tests"] = {"image": {"repository": mock_repo, "tag": mock_tag, "pullPolicy": "IfNotPresent"}}
        for chart, values in per_chart.items():
            (self.workdir / f"{chart}-images.yaml").write_text(yaml.safe_dump(values))

    def values_args(self, chart: str) -> list[str]:
        args = ["-f", str(self.models_file())]
        for f in (VALUES / f"{chart}.yaml", self.workdir / f"{chart}-images.yaml"):
            if f.exists():
                args += ["-f", str(f)]
        if chart == "api-gateway":
            args += ["-f", str(REPO / "images" / "gateway" / "values.yaml")]
        return args

    def install(self, chart: str, *, wait: bool = True, timeout: str = "5m", extra: tuple[str, ...] = ()) -> None:
        args = [
            "upgrade",
            "--install",
            chart,
            str(CHARTS / chart),
            "-n",
            self.namespace,
            *self.values_args(chart),
            *extra,
        ]
        if wait:
            args += ["--wait", "--timeout", timeout]
        with step(f"helm upgrade --install {chart} -n {self.namespace}"):
            # through progress.run: a heartbeat while --wait waits for the pods
            progress.run(
                [helm_bin(), *args, *self.cluster.kube_args()],
                log=self.workdir / "helm.log",
                name=f"helm upgrade --install {chart}",
                timeout=1500,
            )

    def dry_run_server(self, chart: str) -> str:
        """`helm install --dry-run=server`: rendered and validated by the real API server."""
        with step(f"helm install {chart} --dry-run=server"):
            return self.helm(
                "install",
                chart,
                str(CHARTS / chart),
                "-n",
                self.namespace,
                *self.values_args(chart),
                "--dry-run=server",
            ).stdout

    def template(
        self, chart: Path, values: Path | None = None, *, extra: tuple[str, ...] = (), namespace: str | None = None
    ) -> str:
        """`helm template` of `chart` (any folder) with the stack's values, or with `values` (and the
        models, where its schema takes them), into the stack's namespace or `namespace`."""
        if (chart / "Chart.lock").exists() or "dependencies" in (chart / "Chart.yaml").read_text():
            subprocess.run(
                [helm_bin(), "dependency", "build", "--skip-refresh", str(chart)], capture_output=True, text=True
            )
        if values is None:
            files = self.values_args(chart.name)
        else:
            schema = chart / "values.schema.json"
            takes_models = not schema.exists() or "models" in json.loads(schema.read_text()).get("properties", {})
            files = (["-f", str(self.models_file())] if takes_models else []) + ["-f", str(values)]
        proc = subprocess.run(
            [helm_bin(), "template", chart.name, str(chart), "-n", namespace or self.namespace, *files, *extra],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"helm template {chart.name}:\n{proc.stderr}")
        return proc.stdout

    def server_dry_run_apply(self, manifest: str, namespace: str | None = None) -> subprocess.CompletedProcess:
        """`kubectl apply --dry-run=server --validate=strict` into the stack's namespace or
        `namespace`; namespaces it names are created first (a dry run cannot create them, and the
        API server refuses objects in a missing one)."""
        docs = [d for d in yaml.safe_load_all(manifest) if isinstance(d, dict) and d.get("kind")]
        for doc in docs:
            doc["metadata"].setdefault("namespace", namespace or self.namespace)  # as `helm install -n` would
        existing = {n["metadata"]["name"] for n in self.cluster.kubectl_json("get", "namespaces")["items"]}
        for ns in sorted({d["metadata"]["namespace"] for d in docs} - existing):
            self.cluster.kubectl("create", "namespace", ns)
            self.extra_namespaces.add(ns)
        return self.cluster.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump_all(docs), check=False
        )

    # -- the stack -----------------------------------------------------------------------------
    def prepare(self, built: concurrent.futures.Future | None = None) -> None:
        """Images built (or awaited from `prebuild`) and loaded, chart dependencies, namespace,
        the GGUF directory on the node."""
        with step("build the images"):
            refs = (
                built.result() if built else images.build_many(needed_images(vllm=self.vllm, openwebui=self.openwebui))
            )
        for name, ref in refs.items():
            self.images[name] = self.cluster.load_image(ref)
        self.image_values()
        for chart in self.charts:
            proc = subprocess.run(
                [helm_bin(), "dependency", "build", "--skip-refresh", str(CHARTS / chart)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"helm dependency build {chart}:\n{proc.stderr}")
        self.cluster.kubectl("create", "namespace", self.namespace, check=False)
        self.seed_gguf()

    def install_all(self) -> None:
        """vllm-models first and without waiting (its caches are seeded once its PVCs exist, and
        vLLM starts slowest), then the others, then wait for everything."""
        start = time.monotonic()
        vllm_models = models.enabled(self.catalog(), "vllm")
        self.install("vllm-models", wait=False)
        if vllm_models:
            self.seed_hf_caches(vllm_models)
        self.install("ramalama-models")
        self.install("api-gateway")
        if self.openwebui:
            self.install("openwebui", timeout="10m")
        for m in vllm_models:
            deployment = f"vllm-{m['modelName']}"
            with step(f"wait for {deployment} (vLLM on CPU)"):
                self.wait_rollout(deployment, timeout=900)
        self.wait_gateway_ready()
        self.timings["install"] = time.monotonic() - start

    def wait_gateway_ready(self, names: set[str] | None = None, replicas: int = 1, timeout: float = 120) -> None:
        """Until /v1/models of every gateway pod says each model in `names` (default: every
        enabled one) is ready with at least `replicas` ready pods. Each gateway replica finds a
        model's pods and checks their health on its own, every few seconds: a pod that just
        became Ready is not routed to at once, and one replica ready says nothing of the other
        (asked through the Service, a check could see one and the next request hit the other)."""
        import requests

        if names is None:
            names = {m["modelName"] for m in models.enabled(self.catalog())}

        def routed(entry: dict) -> bool:
            return entry.get("ready") is True and entry.get("replicas", {}).get("ready", 0) >= replicas

        def ready() -> bool:
            gateways = [
                p
                for p in self.pods("app.kubernetes.io/name=api-gateway")
                if not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            ]  # the pods the Service sends requests to
            for pod in gateways:
                port = next(c["containerPort"] for c in pod["spec"]["containers"][0]["ports"] if c["name"] == "http")
                with self.cluster.pod_url(self.namespace, pod, port) as url:
                    listed = {m["id"]: m for m in requests.get(f"{url}/v1/models", timeout=10).json()["data"]}
                if not all(routed(listed.get(n, {})) for n in names):
                    return False
            return bool(gateways)

        progress.wait_for("every model ready at the gateway", ready, timeout=timeout)

    def uninstall_all(self) -> None:
        for chart in reversed(self.charts):
            self.helm("uninstall", chart, "-n", self.namespace, "--wait", check=False)

    # -- seeding the models --------------------------------------------------------------------
    def seed_pod(self, volumes: list[dict], mounts: list[dict], name: str = SEED_POD) -> str:
        """A root pod on the mock image (sh, tar) that only sleeps, with the given volumes: the
        files go in with `kubectl exec -i ... tar -x`, so it works on any provider."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {"app.kubernetes.io/name": name}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "seed",
                        "image": self.images["mock-openai"],
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                        "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        }
        self.cluster.kubectl("-n", self.namespace, "delete", "pod", name, "--ignore-not-found", "--wait=true")
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        self.cluster.kubectl(
            "-n", self.namespace, "wait", f"pod/{name}", "--for=condition=Ready", "--timeout=180s", timeout=200
        )
        return name

    def exec_in(self, pod: str, *cmd: str, input: bytes | None = None, timeout: float = 120) -> bytes:
        proc = subprocess.run(
            ["kubectl", *self.cluster.kubectl_args(), "-n", self.namespace, "exec", "-i", pod, "--", *cmd],
            input=input,
            capture_output=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl exec {pod} -- {' '.join(cmd)}: {proc.stderr.decode()}")
        return proc.stdout

    def seed_gguf(self) -> None:
        """The GGUF directory on the node, with a tiny GGUF under each GGUF entry's file name
        (kept when already there: the node's files outlive the stack, as a user's would)."""
        entries = models.enabled(self.catalog(), "gguf")
        if not entries:
            return
        with step(f"write {len(entries)} tiny GGUF model(s) into {GGUF_DIR} on the node"):
            pod = self.seed_pod(
                [{"name": "host", "hostPath": {"path": "/var/lib", "type": "Directory"}}],
                [{"name": "host", "mountPath": "/host/var/lib"}],
                name=f"{SEED_POD}-gguf",
            )
            target = "/host" + GGUF_DIR
            files = {m["gguf"]: models.gguf_for(m) for m in entries}
            self.exec_in(
                pod,
                "sh",
                "-c",
                f"mkdir -p {target} && tar -x -C {target} && chmod -R a+rX {target}",
                input=models.files_tar(files),
            )
            self.cluster.kubectl("-n", self.namespace, "delete", "pod", pod, "--wait=false")

    def cache_claims(self, entries: list[dict]) -> dict[str, str]:
        """modelName -> the cache PVC the chart made for it (by the model label of the chart's objects)."""
        claims = {}
        for pvc in self.cluster.kubectl_json("-n", self.namespace, "get", "pvc")["items"]:
            model = pvc["metadata"].get("labels", {}).get("llm-stack/model")
            if model:
                claims[model] = pvc["metadata"]["name"]
        missing = [m["modelName"] for m in entries if m["modelName"] not in claims]
        if missing:
            raise RuntimeError(f"no cache PVC labelled llm-stack/model for {missing}: {sorted(claims)}")
        return {m["modelName"]: claims[m["modelName"]] for m in entries}

    def seed_hf_caches(self, entries: list[dict]) -> None:
        """A tiny Llama under each entry's huggingfaceId, in the Hugging Face cache layout, on the
        cache PVC the chart created (HF_HOME=/data/huggingface in the pod): a download done once."""
        with step(f"seed {len(entries)} Hugging Face cache PVC(s) with tiny models"):
            claims: dict[str, str] = progress.wait_for(  # type: ignore[assignment]
                "the cache PVCs", lambda: self._claims_or_none(entries), timeout=120
            )
            volumes = [
                {"name": f"c{i}", "persistentVolumeClaim": {"claimName": claim}}
                for i, claim in enumerate(claims.values())
            ]
            mounts = [{"name": f"c{i}", "mountPath": f"/seed/{name}"} for i, name in enumerate(claims)]
            pod = self.seed_pod(volumes, mounts, name=f"{SEED_POD}-hf")
            for m in entries:
                # The pods run as UID/GID 1000 with fsGroup 1000: the cache stays writable for them.
                self.exec_in(
                    pod,
                    "sh",
                    "-c",
                    f"tar -x -C /seed/{m['modelName']} && chown -R 1000:1000 /seed/{m['modelName']}/huggingface",
                    input=models.hf_cache_tar(m),
                )
            self.cluster.kubectl("-n", self.namespace, "delete", "pod", pod, "--wait=false")

    def _claims_or_none(self, entries: list[dict]) -> dict[str, str] | None:
        try:
            return self.cache_claims(entries)
        except RuntimeError:
            return None

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

    @contextlib.contextmanager
    def openwebui_url(self) -> Iterator[str]:
        with self.cluster.service_url(self.namespace, "openwebui", 80) as url:
            yield url

    def scale(self, deployment: str, replicas: int) -> None:
        self.cluster.kubectl("-n", self.namespace, "scale", f"deployment/{deployment}", f"--replicas={replicas}")

    def wait_rollout(self, deployment: str, timeout: int = 180) -> None:
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "rollout",
            "status",
            f"deployment/{deployment}",
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )

    def diagnostics(self) -> str:
        out = [self.cluster.kubectl("-n", self.namespace, "get", "all,pvc,events", "-o", "wide", check=False).stdout]
        for pod in self.pods():
            if not all(c.get("ready") for c in pod["status"].get("containerStatuses", [{}])):
                out.append(
                    self.cluster.kubectl(
                        "-n", self.namespace, "describe", "pod", pod["metadata"]["name"], check=False
                    ).stdout[-3000:]
                )
                out.append(
                    self.cluster.kubectl(
                        "-n",
                        self.namespace,
                        "logs",
                        pod["metadata"]["name"],
                        "--all-containers",
                        "--tail=40",
                        check=False,
                    ).stdout
                )
        return "\n".join(out)


__all__ = ["GGUF_DIR", "Stack", "prebuild", "say"]

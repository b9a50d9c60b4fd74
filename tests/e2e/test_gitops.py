"""The seed's golden path with a real Argo CD (tools/stack/argocd.py) syncing from a git server on
the node (tools/stack/gitserver.py): docs/gitops.md's bootstrap of `argocd/` (its root Application,
rendered with helm template and applied with kubectl) brings every Application to Synced and
Healthy in its wave, and commits pushed to that server change the running stack with no other step.

The commit under test is the working tree (tests/e2e run on uncommitted work too) on top of
HEAD, plus what a user of a CPU-only cluster would commit in their fork: argocd/values.yaml
pointing at the git server, the stack's namespace and the e2e's value files; models.yaml made
runnable here (llama-server models: vLLM on CPU takes minutes per start, and its path is
proven by test_stack.py; each vLLM entry stays in the list, disabled; the add and remove commits
also carry one vllm-models entry served by images/mock-openai, for its cache PVC). The stack runs in its own
namespace (`llm-gitops`), Argo CD in `argocd`; both are removed at the start and at the end.
Runs in file order: each change builds on the commit before it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from progress import say, step
from stack import argocd, gitserver, install
from stack import images as stack_images
from stack import models as stack_models

from e2e.test_stack import TIMEOUT, chat, models_by_id, until

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "llm-gitops"
BRANCH = "e2e"
WORKDIR = REPO / "build" / "e2e" / "gitops"
CHARTS = ("vllm-models", "ramalama-models", "api-gateway", "openwebui")
ADDED = {"modelName": "gitops-added", "gguf": "e2e/gitops-added.gguf", "aliases": ["gitops-added-alias"]}
CACHED_NAME = "gitops-cached"
CACHED_PVC = f"vllm-{CACHED_NAME}-cache"
TIMINGS: dict[str, float] = {}


class GitOps:
    """The stack as Argo CD runs it: the commits pushed so far and the helpers to make more."""

    def __init__(self, cluster, stack: install.Stack, server: gitserver.GitServer):
        self.cluster = cluster
        self.stack = stack
        self.server = server
        self.head: str | None = None
        self.image_values: dict[str, dict] = {}

    def argocd_values(self) -> dict:
        """argocd/values.yaml as a fork on this cluster commits it: the git server, the branch, the
        namespace, and each chart's e2e values files (after models.yaml, as the docs describe)."""
        values = yaml.safe_load((REPO / "argocd" / "values.yaml").read_text())
        values.update(repoURL=self.server.url, targetRevision=BRANCH)
        values["destination"]["namespace"] = NAMESPACE
        for chart in CHARTS:
            files = [f"tools/stack/values/{chart}.yaml", f"e2e-values/{chart}-images.yaml"]
            if chart == "api-gateway":
                files.append("images/gateway/values.yaml")
            values["applications"][chart]["valueFiles"] = files
        values["applications"]["openwebui"]["enabled"] = False  # see the module docstring
        return values

    def publish(self, message: str) -> str:
        """Commit the working tree + the e2e files (the stack's current catalog) and push it."""
        catalog = self.stack.catalog()
        overlay = {
            "models.yaml": yaml.safe_dump(catalog, sort_keys=False).encode(),
            "argocd/values.yaml": yaml.safe_dump(self.argocd_values(), sort_keys=False).encode(),
        }
        for chart in CHARTS:
            overlay[f"e2e-values/{chart}-images.yaml"] = yaml.safe_dump(self.image_values[chart]).encode()
        commit = gitserver.commit_tree(overlay, parent=self.head, message=message)
        with step(f"push {commit[:10]} ({message}) to the git server"):
            self.server.push(commit, BRANCH)
        self.head = commit
        return commit

    def app_names(self) -> set[str]:
        values = self.argocd_values()
        return {values["selfManage"]["name"]} | {n for n, a in values["applications"].items() if a.get("enabled")}

    def wait(self, timeout: float = 600) -> dict[str, dict]:
        assert self.head
        return argocd.wait_synced_healthy(self.cluster, self.app_names(), self.head, timeout=timeout)


def _cleanup(cluster) -> None:
    """Remove what an earlier run left: the Applications (without their controller, a finalizer
    would keep them forever), the stack's namespace, Argo CD."""
    if cluster.kubectl("get", "namespace", argocd.NAMESPACE, check=False).returncode == 0:
        # The controller first: left running, it would recreate what is being deleted.
        cluster.kubectl(
            "-n",
            argocd.NAMESPACE,
            "delete",
            "statefulset",
            "argocd-application-controller",
            "--ignore-not-found",
            "--wait=true",
            timeout=180,
        )
        apps = cluster.kubectl("-n", argocd.NAMESPACE, "get", "applications.argoproj.io", "-o", "name", check=False)
        for app in apps.stdout.split():
            cluster.kubectl(
                "-n",
                argocd.NAMESPACE,
                "patch",
                app,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
    for ns in (NAMESPACE, argocd.NAMESPACE):
        cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", timeout=300)


@pytest.fixture(scope="module")
def gitops(cluster, images: dict[str, str]):
    with step("build the Argo CD and Redis images"):
        built = stack_images.build_many(["argocd", "redis"])
    refs = {name: cluster.load_image(ref) for name, ref in built.items()}
    with step(f"remove what an earlier run left (namespaces {NAMESPACE}, {argocd.NAMESPACE})"):
        _cleanup(cluster)
    TIMINGS["argocd install"] = argocd.install(cluster, refs)
    server = gitserver.GitServer(cluster, argocd.NAMESPACE, refs["argocd"])
    server.start()

    stack = install.Stack(cluster, NAMESPACE, WORKDIR, vllm=False, openwebui=False)
    # The images of the charts this stack runs (the session built them; loading is a lookup).
    stack.images.update({n: cluster.load_image(images[n]) for n in ("mock-openai", "gateway", "llama-server")})
    stack.image_values()
    g = GitOps(cluster, stack, server)
    g.image_values = {c: yaml.safe_load((WORKDIR / f"{c}-images.yaml").read_text()) for c in CHARTS}
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    # The GGUF files are on the node before their models are in git, as a user's would be: the
    # added model's too.
    stack.extra_models = [ADDED]
    stack.seed_gguf()
    stack.extra_models = []
    yield g
    with step(f"remove the GitOps stack ({NAMESPACE}) and Argo CD"):
        root = g.argocd_values()["selfManage"]["name"]
        cluster.kubectl("-n", argocd.NAMESPACE, "delete", "application", root, "--wait=true", check=False)
        cluster.kubectl(
            "-n",
            argocd.NAMESPACE,
            "delete",
            "applications.argoproj.io",
            "--all",
            "--wait=true",
            check=False,
            timeout=300,
        )
        _cleanup(cluster)
        argocd.uninstall(cluster, refs)
    say("GitOps timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))


def _gateway_ready(g: GitOps, names: set[str]) -> dict:
    with g.stack.gateway() as url:
        listed = models_by_id(url)
    return listed if all(listed.get(n, {}).get("ready") is True for n in names) else {}


def test_the_bootstrap_brings_every_application_to_synced_and_healthy_in_waves(gitops):
    g = gitops
    commit = g.publish("e2e: the working tree, on this cluster")
    start = time.monotonic()
    # docs/gitops.md's bootstrap: the root Application only; Argo CD creates the others, wave by wave.
    with step("bootstrap: helm template llm-stack argocd -n argocd --show-only templates/self.yaml | kubectl apply"):
        tree = gitserver.export(commit, WORKDIR / "checkout")
        install.subprocess.run(
            [install.helm_bin(), "dependency", "build", "--skip-refresh", str(tree / "argocd")],
            check=True,
            capture_output=True,
        )
        rendered = g.stack.helm(
            "template", "llm-stack", str(tree / "argocd"), "-n", argocd.NAMESPACE, "--show-only", "templates/self.yaml"
        ).stdout
        g.cluster.kubectl("apply", "-n", argocd.NAMESPACE, "-f", "-", input=rendered)
    apps = g.wait(timeout=900)
    TIMINGS["bootstrap to Synced/Healthy"] = time.monotonic() - start
    names = {m["modelName"] for m in stack_models.enabled(g.stack.catalog())}
    until("every model ready at the gateway", lambda: _gateway_ready(g, names), timeout=180)
    TIMINGS["bootstrap to every model routed"] = time.monotonic() - start

    # Every chart Application read models.yaml through $values, at this commit.
    for chart in CHARTS:
        if chart not in apps:
            continue
        sources = apps[chart]["spec"]["sources"]
        assert sources[0]["helm"]["valueFiles"][0] == "$values/models.yaml", sources
        assert sources[1] == {"repoURL": g.server.url, "targetRevision": BRANCH, "ref": "values"}, sources
        assert apps[chart]["status"]["sync"]["revisions"] == [commit, commit], apps[chart]["status"]["sync"]

    # Waves with the health check: an Application of a later wave was created only after every
    # workload of the earlier waves was available (Argo CD waited for their health).
    def created(name: str) -> str:
        return apps[name]["metadata"]["creationTimestamp"]

    available = {}
    for d in g.stack.deployments():
        cond = next(c for c in d["status"].get("conditions", []) if c["type"] == "Available")
        available[d["metadata"]["name"]] = cond["lastTransitionTime"]
    models_ready = max(v for k, v in available.items() if k.startswith(("ramalama-", "vllm-")))
    assert created("api-gateway") >= models_ready, (created("api-gateway"), available)
    say(f"waves: models available at {models_ready}, api-gateway Application created at {created('api-gateway')}")

    with g.stack.gateway() as url:
        for model in stack_models.enabled(g.stack.catalog()):
            resp = chat(url, model["modelName"])
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"], resp.text
    say("GitOps timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))


class Traffic:
    """Chats with one model every few hundred ms in the background; counts what failed."""

    def __init__(self, g: GitOps, model: str):
        self.g, self.model = g, model
        self.ok, self.failed = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.g.stack.gateway() as url:
            while not self._stop.is_set():
                try:
                    resp = chat(url, self.model)
                    if resp.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{resp.status_code} {resp.text[:200]}")
                except requests.RequestException as exc:
                    self.failed.append(repr(exc))
                self._stop.wait(0.3)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT + 10)


def _pods(g: GitOps, prefix: str) -> dict[str, str]:
    """name -> uid of the pods whose name starts with `prefix`."""
    return {
        p["metadata"]["name"]: p["metadata"]["uid"] for p in g.stack.pods() if p["metadata"]["name"].startswith(prefix)
    }


def _cached(g: GitOps) -> dict:
    """A charts/vllm-models entry with its cache PVC, added and removed beside ADDED. Its server
    is images/mock-openai (`engine: openai`, which the e2e builds anyway), not vLLM: the subject
    is Argo CD's sync and prune of a vLLM entry's objects, PVC included, not the engine (vLLM on
    CPU is test_stack.py's)."""
    repo, tag = g.stack.images["mock-openai"].rsplit(":", 1)
    return {
        "modelName": CACHED_NAME,
        "huggingfaceId": f"e2e/{CACHED_NAME}",
        "engine": "openai",
        "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "args": ["--model", f"e2e/{CACHED_NAME}", "--served-model-name", CACHED_NAME, "--port", "8000"],
    }


def _first_model(g: GitOps) -> str:
    return stack_models.enabled(g.stack.catalog(), "gguf")[0]["modelName"]


def _routed_everywhere(g: GitOps, listed: list[str], asked: list[str], rounds: int = 8) -> bool:
    """`listed` ready in /v1/models and `asked` answering, `rounds` times through the gateway's
    Service (which spreads the requests over its pods: each pod must route them)."""
    with g.stack.gateway() as url:
        for _ in range(rounds):
            models = models_by_id(url)
            if not all(models.get(n, {}).get("ready") is True for n in listed):
                return False
            for n in asked:
                resp = chat(url, n)
                if resp.status_code != 200 or not resp.json()["choices"]:
                    return False
    return True


def test_a_commit_adding_a_model_is_synced_and_routed_with_no_failed_request(gitops):
    """Two entries added in one commit are synced and routed with no manual step, while chats to
    another model keep being answered, and the gateway's pods keep their uids: api-gateway 1.4.0
    reloads nginx in place when its mounted routes.json changes. Add-to-routed is mostly the
    kubelet's propagation of the changed ConfigMap into the running pods (its sync period)."""
    g = gitops
    gateway_pods = _pods(g, "api-gateway-")
    listed, asked = [ADDED["modelName"], CACHED_NAME], [ADDED["aliases"][0], CACHED_NAME]
    with Traffic(g, _first_model(g)) as traffic:
        g.stack.extra_models = [ADDED, _cached(g)]
        start = time.monotonic()
        commit = g.publish("e2e: add a GGUF model and a vLLM-chart model with a cache PVC")
        g.wait()
        TIMINGS["add-model commit to Synced/Healthy"] = time.monotonic() - start
        until(
            f"{', '.join(asked)} listed and answering at every gateway pod",
            lambda: _routed_everywhere(g, listed, asked),
            timeout=240,
            interval=2,
        )
        TIMINGS["add-model commit to routed"] = time.monotonic() - start
        time.sleep(2)  # a few requests after the change too
    after = _pods(g, "api-gateway-")
    rolled = set(gateway_pods) != set(after)
    say(
        f"add models {commit[:10]}: {traffic.ok} chats during the change, {len(traffic.failed)} failed; "
        f"gateway pods {'rolled' if rolled else 'unchanged'}: {sorted(gateway_pods)} -> {sorted(after)}"
    )
    assert traffic.ok > 0 and not traffic.failed, traffic.failed[:5]
    assert not rolled, f"the gateway's pods rolled on a catalog change: {sorted(gateway_pods)} -> {sorted(after)}"
    pvc = g.cluster.kubectl_json("-n", NAMESPACE, "get", "pvc", CACHED_PVC)
    assert pvc["status"]["phase"] == "Bound", pvc["status"]


def test_a_commit_changing_one_models_image_tag_rolls_that_model_only(gitops, cluster):
    """The added GGUF entry gets its own `image: {tag: ...}` (ramalama-models' per-entry image,
    over the flavour's): that model's pods roll; the other models' pods and the gateway's keep
    their uids."""
    g = gitops
    values = g.image_values["ramalama-models"]
    repo = values["accelerators"]["cpu"]["repository"]
    new_tag = values["image"]["tag"] + "-retag"
    stack_images.docker("tag", f"{repo}:{values['image']['tag']}", f"{repo}:{new_tag}")
    cluster.load_image(f"{repo}:{new_tag}")
    target = f"ramalama-{ADDED['modelName']}-"
    models_before = {**_pods(g, "ramalama-"), **_pods(g, "vllm-")}
    others = {n: u for n, u in models_before.items() if not n.startswith(target)}
    assert others and len(others) < len(models_before), models_before
    gateway_pods = _pods(g, "api-gateway-")
    g.stack.extra_models = [{**m, "image": {"tag": new_tag}} if m is ADDED else m for m in g.stack.extra_models]
    start = time.monotonic()
    g.publish(f"e2e: {ADDED['modelName']} takes image tag {new_tag}")
    g.wait()
    g.stack.wait_rollout(target[:-1])
    until(
        "the old pods of the retagged model gone",
        lambda: not set(models_before) & set(_pods(g, target)),
        timeout=120,
    )
    TIMINGS["image-tag commit to rolled"] = time.monotonic() - start
    rolled = [p for p in g.stack.pods() if p["metadata"]["name"].startswith(target)]
    assert rolled and all(p["spec"]["containers"][0]["image"] == f"{repo}:{new_tag}" for p in rolled), rolled
    assert {**_pods(g, "ramalama-"), **_pods(g, "vllm-")} == {**others, **_pods(g, target)}, "another model rolled"
    assert _pods(g, "api-gateway-") == gateway_pods, "the gateway rolled on a model image change"
    say(f"image tag of {ADDED['modelName']} only: rolled {sorted(_pods(g, target))}, kept {sorted(others)}")


def test_a_commit_removing_models_prunes_them_keeps_the_cache_pvc_and_drops_them_from_the_list(gitops):
    """Both added entries leave models.yaml: their Deployments and Services are pruned, the vLLM
    entry's cache PVC stays (vllm-models annotates it `argocd.argoproj.io/sync-options:
    Prune=false,Delete=false`, beside `helm.sh/resource-policy: keep`, which Argo CD ignores), and
    both leave /v1/models. Argo CD then reports vllm-models OutOfSync on that PVC alone (a
    resource kept from pruning still differs from git) until it is deleted by hand, as the chart
    says to free the space."""
    g = gitops
    g.stack.extra_models = []
    start = time.monotonic()
    head = g.publish("e2e: remove the added models")
    names = (f"ramalama-{ADDED['modelName']}", f"vllm-{CACHED_NAME}")

    def pruned():
        left = g.cluster.kubectl_json("-n", NAMESPACE, "get", "deployments,services")["items"]
        return not [i["metadata"]["name"] for i in left if i["metadata"]["name"].startswith(names)]

    # The sync issues the deletes; the objects go a moment later (the pods drain first).
    until(f"{', '.join(names)}: Deployments and Services pruned", pruned, timeout=240)
    TIMINGS["remove-models commit to pruned"] = time.monotonic() - start

    def kept_by_argo() -> dict | None:
        apps = argocd.applications(g.cluster)
        app = apps.get("vllm-models", {})
        st = app.get("status", {})
        op = st.get("operationState", {})
        result = op.get("syncResult", {})
        if op.get("phase") != "Succeeded" or head not in (result.get("revisions") or [result.get("revision")]):
            return None  # the sync of the removal ran (not only its comparison)
        others = g.app_names() - {"vllm-models"}
        if not all(
            apps[n]["status"]["sync"]["status"] == "Synced" and head in argocd.synced_revisions(apps[n]) for n in others
        ):
            return None
        return app

    app = until("vllm-models synced to the removal (its PVC kept)", kept_by_argo, timeout=300)
    out_of_sync = [r for r in app["status"].get("resources", []) if r.get("status") != "Synced"]
    assert [(r["kind"], r["name"], r.get("requiresPruning")) for r in out_of_sync] == [
        ("PersistentVolumeClaim", CACHED_PVC, True)
    ], out_of_sync
    pvc = g.cluster.kubectl_json("-n", NAMESPACE, "get", "pvc", CACHED_PVC)
    assert "deletionTimestamp" not in pvc["metadata"] and pvc["status"]["phase"] == "Bound", pvc
    annotations = pvc["metadata"].get("annotations", {})
    assert annotations.get("argocd.argoproj.io/sync-options") == "Prune=false,Delete=false", annotations
    assert annotations.get("helm.sh/resource-policy") == "keep", annotations
    say(f"removed {', '.join(names)}: pruned, {CACHED_PVC} kept (Bound; vllm-models OutOfSync on it alone)")

    def dropped():
        with g.stack.gateway() as url:  # several times: each gateway pod must have dropped them
            return all(not {ADDED["modelName"], CACHED_NAME} & set(models_by_id(url)) for _ in range(8))

    until("the removed models gone from /v1/models", dropped, timeout=240, interval=2)
    # Freed by hand, as the chart's comment says; then every Application is Synced again.
    g.cluster.kubectl("-n", NAMESPACE, "delete", "pvc", CACHED_PVC, "--wait=true", timeout=180)
    g.wait()


def test_self_heal_puts_back_a_deployment_deleted_by_hand(gitops):
    g = gitops
    deployment = f"ramalama-{_first_model(g)}"
    uid = g.cluster.kubectl_json("-n", NAMESPACE, "get", "deployment", deployment)["metadata"]["uid"]
    start = time.monotonic()
    g.cluster.kubectl("-n", NAMESPACE, "delete", "deployment", deployment, "--wait=true")

    def back():
        proc = g.cluster.kubectl(
            "-n", NAMESPACE, "get", "deployment", deployment, "-o", "jsonpath={.metadata.uid}", check=False
        )
        return proc.returncode == 0 and proc.stdout and proc.stdout != uid

    until(f"Argo CD to recreate {deployment}", back, timeout=180)
    g.stack.wait_rollout(deployment)
    TIMINGS["self-heal to ready"] = time.monotonic() - start
    g.wait()

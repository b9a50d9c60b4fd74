"""The stack on a real cluster, driven through the api-gateway Service like a client would.

Runs in file order: the tests that change the stack (scale to zero, upgrade, uninstall) come last.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import requests
import yaml

from e2e.progress import say, step
from e2e.stack import GGUF_DIR, INSTALLED, e2e_models
from harness import paths

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30


def _models() -> list[dict]:
    return [m for m in e2e_models()["models"] if m.get("enabled") is not False]


def _service(model: dict) -> str:
    return f"{'ramalama' if 'gguf' in model else 'vllm'}-{model['modelName']}"


def chat(url: str, model: str, **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT)


def backend_pod(resp: requests.Response) -> str:
    """The pod that answered: X-Mock-Backend is `<served name>@<hostname>:<port>`, hostname = pod name."""
    header = resp.headers.get("X-Mock-Backend", "")
    assert "@" in header, f"no X-Mock-Backend header: {resp.status_code} {dict(resp.headers)} {resp.text[:300]}"
    return header.split("@", 1)[1].rsplit(":", 1)[0]


def pods_of(stack, service: str) -> set[str]:
    """Names of the Ready pods behind a Service (its selector, as the Service sees them)."""
    svc = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", service)
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    return {p["metadata"]["name"] for p in stack.pods(selector)}


def models_by_id(url: str) -> dict:
    resp = requests.get(f"{url}/v1/models", timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    return {m["id"]: m for m in resp.json()["data"]}


def until(what: str, check, timeout: float = 120, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, AssertionError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


# -- the cluster and what it runs ---------------------------------------------------------------


def test_every_model_has_a_ready_deployment(stack):
    ready = {d["metadata"]["name"]: d["status"].get("readyReplicas", 0) for d in stack.deployments()}
    for model in _models():
        assert ready.get(_service(model), 0) >= 1, f"{_service(model)} not ready: {ready}\n{stack.diagnostics()}"
    assert ready.get("api-gateway", 0) >= 1, ready


def test_model_servers_got_the_charts_arguments(stack):
    """The mock runs the charts' rendered command lines; they carry the catalog's names."""
    for model in _models():
        pods = stack.pods()
        pod = next(p for p in pods if p["metadata"]["name"] in pods_of(stack, _service(model)))
        container = pod["spec"]["containers"][0]
        argv = " ".join(container.get("command", []) + container.get("args", []))
        assert model["modelName"] in argv, argv
        if "gguf" in model:
            assert model["gguf"] in argv, argv


# -- routing through the gateway ----------------------------------------------------------------


def test_v1_models_lists_every_model_with_readiness(stack, gateway):
    def all_ready():
        listed = models_by_id(gateway)
        return listed if all(listed.get(m["modelName"], {}).get("ready") is True for m in _models()) else None
    listed = until("every model ready in /v1/models", all_ready, timeout=60)
    for model in _models():
        assert listed[model["modelName"]]["status"] == "ready", listed[model["modelName"]]


@pytest.mark.parametrize("model", [m["modelName"] for m in _models()])
def test_chat_reaches_the_pod_of_its_model(stack, gateway, model):
    entry = next(m for m in _models() if m["modelName"] == model)
    resp = chat(gateway, model)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    assert backend_pod(resp) in pods_of(stack, _service(entry)), resp.headers.get("X-Mock-Backend")


def test_alias_routes_to_its_model(stack, gateway):
    aliased = [(a, m) for m in _models() for a in m.get("aliases", [])]
    assert aliased, "the e2e catalog (models.yaml) has no alias"
    for alias, model in aliased:
        resp = chat(gateway, alias)
        assert resp.status_code == 200, f"{alias}: {resp.text}"
        assert backend_pod(resp) in pods_of(stack, _service(model)), (alias, resp.headers.get("X-Mock-Backend"))


def test_streaming_arrives_chunk_by_chunk(gateway):
    model = _models()[0]["modelName"]
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "count"}],
            "mock": {"chunks": 6, "interval_ms": 300}}
    arrivals = []
    with requests.post(f"{gateway}/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line[6:]))
    assert arrivals[-1][1] == b"[DONE]"
    deltas = [t for t, data in arrivals if data != b"[DONE]" and
              json.loads(data)["choices"] and json.loads(data)["choices"][0]["delta"].get("content")]
    assert len(deltas) == 6, arrivals
    gaps = [b - a for a, b in zip(deltas, deltas[1:])]
    # 300 ms apart at the backend: a buffering proxy would deliver them in one burst.
    assert min(gaps) > 0.15, f"events arrived in bursts: gaps {gaps}"


def test_unknown_model_is_404(gateway):
    resp = chat(gateway, "no-such-model")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "model_not_found", resp.text


# -- other charts against the real API server ---------------------------------------------------


def test_openwebui_installs_with_a_server_side_dry_run(stack):
    """Its image is not reachable here: `helm install --dry-run=server`, then the API server
    validates and admits every object it would create (kubectl apply --dry-run=server)."""
    out = stack.dry_run_server("openwebui")
    manifest = out.split("MANIFEST:", 1)[-1].split("NOTES:", 1)[0]
    kinds = {m["kind"] for m in yaml.safe_load_all(manifest) if m}
    assert "Deployment" in kinds, kinds
    proc = stack.server_dry_run_apply(manifest)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def crds(stack):
    """The third-party CRDs (harness.paths.crds_dir()), installed and Established."""
    files = sorted(paths.crds_dir().rglob("*.yaml"))
    if not files:
        # Fail, never skip: a missing CRD folder must not pass CI quietly.
        pytest.fail(f"no CRD files under {paths.crds_dir()}: set LLM_CHARTS_CRDS_DIR to the CRD folder")
    names = []
    for crd in files:
        proc = stack.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), check=False)
        assert proc.returncode == 0, f"{crd}: {proc.stderr}"
        names += [d["metadata"]["name"] for d in yaml.safe_load_all(crd.read_text())
                  if d and d.get("kind") == "CustomResourceDefinition"]
    stack.cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                          *[f"crd/{n}" for n in names], timeout=150)
    return names


def test_crds_install(crds):
    assert crds


def _gitops_cases() -> list[tuple[str, str]]:
    return [(chart.name, values.name) for d in ("argocd", "istio") for chart in [REPO / d]
            if (chart / "Chart.yaml").exists() for values in sorted((chart / "ci").glob("*-values.yaml"))]


@pytest.mark.parametrize(("chart", "values"), _gitops_cases() or [pytest.param("argocd", "", marks=pytest.mark.skip(
    reason="argocd/ and istio/ hold no chart yet"))])
def test_gitops_manifests_pass_server_side_validation(stack, crds, chart, values):
    """Every argocd/ and istio/ manifest, rendered with each ci values file and the shared
    models.yaml, is admitted by the API server (strict field validation, dry run)."""
    manifest = stack.template(REPO / chart, REPO / chart / "ci" / values)
    assert manifest.strip(), f"{chart} with {values} renders nothing"
    proc = stack.server_dry_run_apply(manifest)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("chart", INSTALLED)
def test_helm_test_hooks_pass(stack, chart):
    """`helm test`: the chart's hook Pod (templates/tests/) checks what the chart serves, from inside
    the cluster. No `--logs`: a passed test Pod is deleted (hook-succeeded) before helm would read
    its log; a failed one stays, and its log is in the failure message."""
    proc = stack.helm("test", chart, "-n", stack.namespace, "--timeout", "3m", check=False)
    if proc.returncode != 0:
        logs = stack.cluster.kubectl("-n", stack.namespace, "logs", "-l", "app.kubernetes.io/component=helm-test",
                                     "--all-containers", "--tail=60", "--prefix", check=False)
        pytest.fail(f"helm test {chart}:\n{proc.stdout}{proc.stderr}\ntest pod logs:\n{logs.stdout}{logs.stderr}")
    # A hook ran: `helm test` of a chart without one passes with nothing to show.
    assert re.search(r"^Phase:\s+Succeeded", proc.stdout, re.M), proc.stdout


# -- changes to the running stack (order matters from here) --------------------------------------


def _client_pod(stack, name: str, labels: dict) -> str:
    """A pod on the mock image (python3, curl) that only sleeps: a client to `kubectl exec` curl in."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": stack.namespace, "labels": labels},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "client", "image": stack.images["mock-openai"],
                                    "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
                                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                                        "allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    return name


def _curl(stack, pod: str, url: str, *args: str) -> tuple[int, str]:
    """(curl's exit status, its output) from inside `pod`: 0 answered, 7 could not connect, 28 timed out."""
    proc = stack.cluster.kubectl("-n", stack.namespace, "exec", pod, "--", "curl", "-sS", "-o", "/dev/stdout",
                                 "-w", "\n%{http_code}", "--connect-timeout", "3", "--max-time", "10",
                                 *args, url, check=False, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _set_network_policy(stack, enabled: bool) -> None:
    with step(f"helm upgrade api-gateway --set networkPolicy.enabled={str(enabled).lower()}"):
        stack.helm("upgrade", "api-gateway", str(paths.CHARTS / "api-gateway"), "-n", stack.namespace,
                   *stack.values_args("api-gateway"), "--set", f"networkPolicy.enabled={str(enabled).lower()}",
                   "--wait", "--timeout", "5m", timeout=360)


def test_network_policies_let_only_the_gateway_reach_models_and_only_the_ui_reach_the_gateway(stack, gateway):
    """networkPolicy.enabled on a cluster that enforces it (the local cluster runs kube-router's
    firewall): a pod that is not the gateway cannot reach a model, the gateway can; a pod labelled
    like Open WebUI (the chart's default ingressFrom) reaches the gateway, any other pod cannot."""
    if stack.cluster.provider != "local" and os.environ.get("LLM_CHARTS_NETPOL_ENFORCED") != "1":
        pytest.skip("only the local cluster is known to enforce NetworkPolicies (kube-router); "
                    "set LLM_CHARTS_NETPOL_ENFORCED=1 for a cluster whose network plugin does")
    model = _models()[0]
    svc = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", _service(model))
    model_url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v1/models"
    model_pod = stack.pods(",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items()))[0]
    target = svc["spec"]["ports"][0]["targetPort"]  # a number or the name of a container port
    port = target if isinstance(target, int) else next(
        p["containerPort"] for c in model_pod["spec"]["containers"] for p in c.get("ports", []) if p["name"] == target)
    model_pod_url = f"http://{model_pod['status']['podIP']}:{port}/v1/models"
    gw = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", stack.gateway_service())
    gateway_url = f"http://{gw['spec']['clusterIP']}:80"
    chat_args = ("-H", "Content-Type: application/json", "-d", json.dumps(
        {"model": model["modelName"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
    stranger = _client_pod(stack, "e2e-netpol-stranger", {"app.kubernetes.io/name": "e2e-stranger"})
    webui = _client_pod(stack, "e2e-netpol-webui", {"app.kubernetes.io/name": "openwebui"})
    try:
        for pod in (stranger, webui):
            stack.cluster.kubectl("-n", stack.namespace, "wait", f"pod/{pod}", "--for=condition=Ready",
                                  "--timeout=120s", timeout=150)
        # Without policies everyone reaches everything: a failure below is the policy, not the network.
        for url in (model_url, model_pod_url, f"{gateway_url}/healthz"):
            rc, out = _curl(stack, stranger, url)
            assert rc == 0 and out.endswith("200"), f"before the policies, {url}: curl {rc}: {out}"

        _set_network_policy(stack, True)
        kinds = stack.cluster.kubectl_json("-n", stack.namespace, "get", "networkpolicies")["items"]
        assert {p["metadata"]["name"] for p in kinds} >= {"api-gateway", "api-gateway-models"}, kinds

        # Not the gateway: no model Service, no model pod (kube-router rejects: curl cannot connect).
        until("the model Service closed to other pods", lambda: _curl(stack, stranger, model_url)[0] in (7, 28))
        for pod, url in ((stranger, model_pod_url), (webui, model_url), (webui, model_pod_url)):
            rc, out = _curl(stack, pod, url)
            assert rc in (7, 28), f"{pod} reached {url} with the policies on: curl {rc}: {out}"
        # Not allowed to the gateway's API port: the stranger; allowed: the Open WebUI label.
        until("the gateway closed to other pods",
              lambda: _curl(stack, stranger, f"{gateway_url}/healthz")[0] in (7, 28))
        rc, out = _curl(stack, stranger, f"{gateway_url}/v1/chat/completions", *chat_args)
        assert rc in (7, 28), f"the stranger chatted through the gateway: curl {rc}: {out}"
        # The allowed client chats through the gateway, so the gateway still reaches the model.
        rc, out = until("a chat from the Open WebUI-labelled pod", lambda: (
            r := _curl(stack, webui, f"{gateway_url}/v1/chat/completions", *chat_args))[0] == 0 and
            r[1].endswith("200") and r)
        assert '"choices"' in out, out
        # The gateway is up and serving, and the stranger is still turned away (not a rollout gap).
        rc, out = _curl(stack, stranger, f"{gateway_url}/healthz")
        assert rc in (7, 28), f"the stranger reached the gateway with the policies on: curl {rc}: {out}"
        # And from this host (the node: kube-router lets a node reach its pods, as kubelet probes need).
        resp = chat(gateway, model["modelName"])
        assert resp.status_code == 200, resp.text
        assert backend_pod(resp) in pods_of(stack, _service(model))
    finally:
        _set_network_policy(stack, False)
        stack.cluster.kubectl("-n", stack.namespace, "delete", "pod", stranger, webui, "--wait=false",
                              check=False)


def test_model_scaled_to_zero_answers_503_then_recovers(stack, gateway):
    model = _models()[0]
    name, deployment = model["modelName"], _service(model)
    stack.scale(deployment, 0)
    try:
        until(f"{deployment} pods gone", lambda: not pods_of(stack, deployment), timeout=120)
        # The gateway's health checks run every 5 s (healthCheck.intervalSeconds): allow a few.
        # (r,): a 503 Response is falsy (requests' Response.__bool__ is `ok`), which `until` would not return.
        (resp,) = until("503 from the gateway", lambda: (r := chat(gateway, name)).status_code == 503 and (r,),
                        timeout=30)
        assert resp.headers.get("Retry-After", "").isdigit(), dict(resp.headers)
        assert resp.json()["error"], resp.text
        listed = models_by_id(gateway)
        assert listed[name]["ready"] is False, listed[name]
    finally:
        stack.scale(deployment, model.get("replicas", 1))
    stack.wait_rollout(deployment)
    resp = until("200 after scaling up", lambda: (r := chat(gateway, name)).status_code == 200 and r, timeout=90)
    assert backend_pod(resp) in pods_of(stack, deployment)


def test_upgrade_that_adds_a_model_makes_it_routable(stack, gateway):
    added = {"modelName": "e2e-added", "huggingfaceId": "e2e/added-model", "aliases": ["e2e-added-alias"],
             "replicas": 1}
    stack.extra_models.append(added)
    for chart in ("vllm-models", "api-gateway"):
        stack.install(chart)  # helm upgrade; no kubectl rollout restart anywhere
    resp = until("the added model answers", lambda: (r := chat(gateway, "e2e-added-alias")).status_code == 200 and r,
                 timeout=180)
    assert backend_pod(resp) in pods_of(stack, "vllm-e2e-added")


def test_uninstall_keeps_the_model_caches(stack):
    kept_before = {p["metadata"]["name"] for p in stack.cluster.kubectl_json(
        "-n", stack.namespace, "get", "pvc")["items"]
        if p["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"}
    stack.uninstall_all()
    left = stack.cluster.kubectl_json("-n", stack.namespace, "get", "all,pvc,configmap")["items"]
    pvcs = {i["metadata"]["name"] for i in left if i["kind"] == "PersistentVolumeClaim"}
    workloads = [f"{i['kind']}/{i['metadata']['name']}" for i in left if i["kind"] in ("Deployment", "Service")]
    assert kept_before, "no cache PVC is marked helm.sh/resource-policy: keep"
    assert kept_before <= pvcs, f"kept caches gone: {kept_before - pvcs}"
    assert not workloads, workloads
    if stack.cluster.provider == "local":  # the node is this host: the GGUF files are still there
        for model in _models():
            if "gguf" in model:
                assert (Path(GGUF_DIR) / model["gguf"]).exists(), model["gguf"]
    say(f"after uninstall: kept {sorted(pvcs)}; GGUF files stay on the node under {GGUF_DIR}")

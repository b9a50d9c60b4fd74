"""The stack on a real cluster with the real engines, driven through the api-gateway Service like a
client would: llama-server (ramalama-models), vLLM on CPU (vllm-models), Open WebUI, the gateway.

Which pod answered is read from the engine itself: each model pod's own /metrics counts the
tokens it generated (vLLM `vllm:generation_tokens_total`, llama-server
`llamacpp:tokens_predicted_total`), read inside the pod with curl.
Runs in file order: the tests that change the stack (restart, scale to zero, upgrade, uninstall)
come last.
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
from progress import say, step
from stack import models as stack_models
from stack.install import CHARTS, GGUF_DIR

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # vLLM on 2 shared cores answers in seconds, not milliseconds
GENERATED = {"vllm": "vllm:generation_tokens_total", "llama-server": "llamacpp:tokens_predicted_total"}


def _catalog() -> dict:
    return stack_models.catalog()


def _models(kind: str | None = None) -> list[dict]:
    return stack_models.enabled(_catalog(), kind)


def _engine(model: dict) -> str:
    return "llama-server" if "gguf" in model else "vllm"


def _service(model: dict) -> str:
    return f"{'ramalama' if 'gguf' in model else 'vllm'}-{model['modelName']}"


def chat(url: str, model: str, **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT)


def pods_of(stack, service: str) -> list[dict]:
    """The pods behind a Service (its selector, as the Service sees them)."""
    svc = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", service)
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    return stack.pods(selector)


def _port(pod: dict) -> int:
    return next(p["containerPort"] for p in pod["spec"]["containers"][0].get("ports", []) if p["name"] == "http")


def pod_get(stack, pod: dict, path: str) -> str:
    """GET localhost:<the http port><path> inside the model pod (the engine images have curl)."""
    proc = stack.cluster.kubectl(
        "-n",
        stack.namespace,
        "exec",
        pod["metadata"]["name"],
        "-c",
        pod["spec"]["containers"][0]["name"],
        "--",
        "curl",
        "-sSf",
        "--max-time",
        "20",
        f"http://127.0.0.1:{_port(pod)}{path}",
        timeout=60,
    )
    return proc.stdout


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus series over its labels (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def generated(stack, model: dict) -> dict[str, float]:
    """Tokens generated so far, per pod of the model, by the engine's own counter."""
    return {
        p["metadata"]["name"]: metric(pod_get(stack, p, "/metrics"), GENERATED[_engine(model)])
        for p in pods_of(stack, _service(model))
    }


def answered_by(stack, model: dict, before: dict[str, float]) -> list[str]:
    after = generated(stack, model)
    return [pod for pod, n in after.items() if n > before.get(pod, 0)]


def _within(want, got) -> bool:
    """`want` (rendered) is contained in `got` (as the API server stored it, defaults added)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_within(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(_within(a, b) for a, b in zip(want, got))
    return want == got


def models_by_id(url: str) -> dict:
    resp = requests.get(f"{url}/v1/models", timeout=30)
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
        except (requests.RequestException, AssertionError, KeyError, RuntimeError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _stream(url: str, model: str, max_tokens: int = 48) -> tuple[list[tuple[float, bytes]], float]:
    """(arrival time, data) of every SSE event of a streamed chat, and the time the request was sent."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        # Both engines take ignore_eos: a random-weight model may end at once otherwise.
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "count"}],
    }
    sent = time.monotonic()
    arrivals = []
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream"), resp.headers
        for line in resp.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line[6:]))
    return arrivals, sent


# -- the cluster and what it runs ---------------------------------------------------------------


def test_every_workload_is_ready(stack):
    ready = {d["metadata"]["name"]: d["status"].get("readyReplicas", 0) for d in stack.deployments()}
    for model in _models():
        assert ready.get(_service(model), 0) >= 1, f"{_service(model)} not ready: {ready}\n{stack.diagnostics()}"
    assert ready.get("api-gateway", 0) >= 1, ready
    assert ready.get("openwebui", 0) >= 1, ready


@pytest.mark.parametrize("model", [m["modelName"] for m in _models()])
def test_the_real_engine_runs_the_charts_own_command_line(stack, model):
    """The pod runs exactly the container the chart renders (command, args, probes, env: no test
    overrides beyond image and sizes), and the program answering is the real engine."""
    entry = next(m for m in _models() if m["modelName"] == model)
    chart = "ramalama-models" if "gguf" in entry else "vllm-models"
    rendered = next(
        d
        for d in yaml.safe_load_all(stack.template(CHARTS / chart))
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == _service(entry)
    )
    want = rendered["spec"]["template"]["spec"]["containers"][0]
    pod = pods_of(stack, _service(entry))[0]
    got = pod["spec"]["containers"][0]
    for key in ("command", "args", "env", "startupProbe", "readinessProbe", "livenessProbe", "image"):
        # The API server fills in defaults (scheme, successThreshold): the chart's fields must all be there.
        assert _within(want.get(key), got.get(key)), f"{key}: pod {got.get(key)} != chart {want.get(key)}"
    if "gguf" in entry:
        assert f"/mnt/models/{entry['gguf']}" in got["args"] and entry["modelName"] in got["args"]
        props = json.loads(pod_get(stack, pod, "/props"))
        assert "11669" in json.dumps(props.get("build_info", "")) or props.get("model_alias") == model, props
    else:
        assert entry["huggingfaceId"] in got["args"]
        listed = json.loads(pod_get(stack, pod, "/v1/models"))["data"]
        assert {m["owned_by"] for m in listed} == {"vllm"}, listed
        assert model in {m["id"] for m in listed}, listed


# -- routing through the gateway ----------------------------------------------------------------


def test_v1_models_lists_every_model_with_readiness(stack, gateway):
    def all_ready():
        listed = models_by_id(gateway)
        return listed if all(listed.get(m["modelName"], {}).get("ready") is True for m in _models()) else None

    listed = until("every model ready in /v1/models", all_ready, timeout=120)
    for model in _models():
        assert listed[model["modelName"]]["status"] == "ready", listed[model["modelName"]]


@pytest.mark.parametrize("model", [m["modelName"] for m in _models()])
def test_chat_is_answered_by_the_engine_of_its_model(stack, gateway, model):
    entry = next(m for m in _models() if m["modelName"] == model)
    before = generated(stack, entry)
    resp = chat(gateway, model)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body["choices"][0]["message"]["content"], str), body
    assert body["usage"]["completion_tokens"] >= 1, body
    assert answered_by(stack, entry, before), f"no pod of {_service(entry)} generated tokens: {before}"


def test_alias_routes_to_its_model(stack, gateway):
    aliased = [(a, m) for m in _models() for a in m.get("aliases", [])]
    assert aliased, "the catalog (models.yaml) has no alias"
    for alias, model in aliased:
        before = generated(stack, model)
        resp = chat(gateway, alias)
        assert resp.status_code == 200, f"{alias}: {resp.text}"
        assert answered_by(stack, model, before), f"{alias}: no pod of {_service(model)} generated tokens"


@pytest.mark.parametrize("kind", ["gguf", "vllm"])
def test_streaming_arrives_as_it_is_generated(stack, gateway, kind):
    """A streamed chat through the gateway: the engine's deltas arrive one by one (not in one
    burst at the end), then [DONE]."""
    model = _models(kind)[0]
    # llama-server makes a token of the tiny model in well under a millisecond: ask for enough
    # of them that generating takes a while.
    arrivals, sent = _stream(gateway, model["modelName"], max_tokens=400 if kind == "gguf" else 64)
    assert arrivals and arrivals[-1][1] == b"[DONE]", arrivals[-3:]
    deltas = [
        t
        for t, data in arrivals
        if data != b"[DONE]"
        and json.loads(data).get("choices")
        and json.loads(data)["choices"][0].get("delta", {}).get("content")
    ]
    assert len(deltas) >= 8, arrivals
    # Delivered as generated: the events are spread over the generation time. A buffering proxy
    # hands them over in one read (spread ~0) when the engine is done.
    spread = deltas[-1] - deltas[0]
    total = arrivals[-1][0] - sent
    distinct = len({round(t, 3) for t in deltas})
    say(f"  {model['modelName']}: {len(deltas)} deltas over {spread:.3f}s of {total:.3f}s, {distinct} distinct ms")
    assert distinct >= 10 and spread > 0.2 * (deltas[-1] - sent), (spread, total, distinct)


def test_unknown_model_is_404(gateway):
    resp = chat(gateway, "no-such-model")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "model_not_found", resp.text


def test_the_gateway_metrics_count_each_models_requests(stack, gateway):
    """Each gateway pod counts what it routed: summed over the pods (read through the API
    server's pod proxy, which works on any provider), every model's chats are there (each
    nginx worker adds its counts every second: read until they are)."""
    for model in _models():
        assert chat(gateway, model["modelName"]).status_code == 200

    def uncounted() -> tuple[list[str], str]:
        texts = []
        for pod in pods_of(stack, stack.gateway_service()):
            port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
            path = f"/api/v1/namespaces/{stack.namespace}/pods/{pod['metadata']['name']}:{port}/proxy/metrics"
            texts.append(stack.cluster.kubectl("get", "--raw", path).stdout)
        text = "\n".join(texts)
        lines = text.splitlines()
        missing = [
            m["modelName"]
            for m in _models()
            if metric(
                "\n".join(line for line in lines if f'model="{m["modelName"]}"' in line and 'status="200"' in line),
                "gateway_requests_total",
            )
            < 1
        ]
        return missing, text

    deadline = time.monotonic() + 15
    missing, text = uncounted()
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing, text = uncounted()
    assert not missing, f"{missing} not counted:\n{text[:3000]}"


@pytest.mark.parametrize("model", [m["modelName"] for m in _models()])
def test_engine_metrics_are_served_where_the_servicemonitor_scrapes(stack, model):
    """The chart's ServiceMonitor (rendered with it on) names a Service port and path; that port of
    the model's Service serves the engine's Prometheus metrics."""
    entry = next(m for m in _models() if m["modelName"] == model)
    chart = "ramalama-models" if "gguf" in entry else "vllm-models"
    extra = ("--set", "defaults.serviceMonitor.enabled=true")
    rendered = [d for d in yaml.safe_load_all(stack.template(CHARTS / chart, extra=extra)) if d]
    monitor = next(
        d
        for d in rendered
        if d["kind"] == "ServiceMonitor" and d["metadata"].get("labels", {}).get("llm-stack/model") == model
    )
    endpoint = monitor["spec"]["endpoints"][0]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s
        for s in stack.cluster.kubectl_json("-n", stack.namespace, "get", "services")["items"]
        if selector.items() <= s["metadata"].get("labels", {}).items()
    ]
    assert services, f"no Service matches the ServiceMonitor's selector {selector}"
    for svc in services:
        port = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == endpoint["port"])
        host = svc["spec"].get("clusterIP")
        if host in (None, "None"):  # headless: a pod behind it
            continue
        with stack.cluster.service_url(stack.namespace, svc["metadata"]["name"], port) as url:
            text = requests.get(f"{url}{endpoint.get('path', '/metrics')}", timeout=30).text
        prefix = "llamacpp:" if "gguf" in entry else "vllm:"
        assert prefix in text, f"{svc['metadata']['name']}:{port}{endpoint.get('path')}: {text[:500]}"


@pytest.mark.parametrize("model", [m["modelName"] for m in _models()])
def test_the_dashboard_and_alerts_read_only_names_the_engine_exports(stack, model):
    """api-gateway's Grafana dashboard and PrometheusRule (metrics.grafanaDashboard, prometheusRule):
    every vllm:* / llamacpp:* name their queries read (Prometheus' parser, tools/promql) is served
    by the real engine's /metrics (tests/monitoring checks the gateway's names and llama.cpp's on
    the host; vLLM runs only here)."""
    from harness import promql
    from harness.render import render_chart

    entry = next(m for m in _models() if m["modelName"] == model)
    on = {"metrics": {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    rendered = render_chart("api-gateway", on)
    _, dashboard = promql.dashboard_of(rendered)
    queries = {**promql.dashboard_queries(dashboard), **promql.rule_queries(promql.rule_of(rendered))}
    engine = "llama.cpp" if "gguf" in entry else "vllm"
    names = promql.metric_names(queries)
    used = {q: [n for n in found if promql.exporter_of(n) == engine] for q, found in names.items()}
    assert any(used.values()), f"no query reads {engine}'s metrics"
    pod = pods_of(stack, _service(entry))[0]
    served = promql.exported_names(pod_get(stack, pod, "/metrics"))
    problems = promql.unexported(used, {engine: served})
    assert not problems, "\n".join(problems)


# -- other charts against the real API server ---------------------------------------------------


@pytest.fixture(scope="module")
def crds(stack):
    """The third-party CRDs (harness.paths.crds_dir()), installed and Established."""
    from harness import paths

    files = sorted(paths.crds_dir().rglob("*.yaml"))
    if not files:
        # Fail, never skip: a missing CRD folder must not pass CI quietly.
        pytest.fail(f"no CRD files under {paths.crds_dir()}: set LLM_CHARTS_CRDS_DIR to the CRD folder")
    names = []
    for crd in files:
        proc = stack.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), check=False)
        assert proc.returncode == 0, f"{crd}: {proc.stderr}"
        names += [
            d["metadata"]["name"]
            for d in yaml.safe_load_all(crd.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        ]
    stack.cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=120s", *[f"crd/{n}" for n in names], timeout=150
    )
    return names


def test_crds_install(crds):
    assert crds


def _gitops_cases() -> list[tuple[str, str]]:
    return [
        (chart.name, values.name)
        for d in ("argocd", "istio", "gateway-api")
        for chart in [REPO / d]
        if (chart / "Chart.yaml").exists()
        for values in sorted((chart / "ci").glob("*-values.yaml"))
    ]


@pytest.mark.parametrize(("chart", "values"), _gitops_cases())
def test_gitops_manifests_pass_server_side_validation(stack, crds, chart, values):
    """Every argocd/, istio/ and gateway-api/ manifest, rendered with each ci values file and the
    shared models.yaml, is admitted by the API server (strict field validation, dry run)."""
    manifest = stack.template(REPO / chart, REPO / chart / "ci" / values)
    assert manifest.strip(), f"{chart} with {values} renders nothing"
    proc = stack.server_dry_run_apply(manifest)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("chart", ["vllm-models", "ramalama-models", "api-gateway", "openwebui"])
def test_helm_test_hooks_pass(stack, chart):
    """`helm test`: the chart's hook Pod (templates/tests/) checks what the chart serves from inside
    the cluster: every model answers its health path, is listed, and answers a chat. No `--logs`: a
    passed test Pod is deleted (hook-succeeded) before helm would read its log; a failed one stays,
    and its log is in the failure message."""
    proc = stack.helm("test", chart, "-n", stack.namespace, "--timeout", "5m", check=False)
    if proc.returncode != 0:
        logs = stack.cluster.kubectl(
            "-n",
            stack.namespace,
            "logs",
            "-l",
            "app.kubernetes.io/component=helm-test",
            "--all-containers",
            "--tail=60",
            "--prefix",
            check=False,
        )
        pytest.fail(f"helm test {chart}:\n{proc.stdout}{proc.stderr}\ntest pod logs:\n{logs.stdout}{logs.stderr}")
    # A hook ran: `helm test` of a chart without one passes with nothing to show.
    assert re.search(r"^Phase:\s+Succeeded", proc.stdout, re.M), proc.stdout


# -- changes to the running stack (order matters from here) --------------------------------------


def _cache_listing(stack, claim: str) -> dict[str, str]:
    """path -> "size mtime inode" of every file in a cache PVC, read by a pod that mounts it."""
    pod = stack.seed_pod(
        [{"name": "cache", "persistentVolumeClaim": {"claimName": claim}}],
        [{"name": "cache", "mountPath": "/cache"}],
        name="e2e-cache-listing",
    )
    try:
        out = stack.exec_in(pod, "find", "/cache", "-printf", "%P\\t%s %T@ %i\\n").decode()
    finally:
        stack.cluster.kubectl("-n", stack.namespace, "delete", "pod", pod, "--wait=false")
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _ready_seconds(pod: dict) -> float:
    """From the pod's creation to its Ready condition."""
    from datetime import datetime

    def ts(s: str) -> float:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp()

    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return ts(ready["lastTransitionTime"]) - ts(pod["metadata"]["creationTimestamp"])


def test_a_restarted_vllm_pod_uses_the_cache_and_is_ready_sooner(stack, gateway):
    """The original design's promise: the weights are downloaded once and restarts use the cache.
    The first pod started before its weights were there (seeded into its cache PVC after the
    install, as a download would fill it) and was Ready only after they arrived. A restart finds
    them: nothing in the cache changes, the hub stays unreachable and offline, and it is Ready
    sooner."""
    model = _models("vllm")[0]
    deployment = _service(model)
    claim = stack.cache_claims([model])[model["modelName"]]
    first = pods_of(stack, deployment)[0]
    first_ready = _ready_seconds(first)
    env = {e["name"]: e.get("value") for e in first["spec"]["containers"][0]["env"]}
    assert env.get("HF_HUB_OFFLINE") == "1" and env.get("HF_HOME", "").startswith("/data"), env
    before = _cache_listing(stack, claim)
    assert any(
        p.startswith(f"huggingface/hub/models--{model['huggingfaceId'].replace('/', '--')}/blobs/") for p in before
    ), sorted(before)
    with step(f"restart {deployment}"):
        stack.cluster.kubectl(
            "-n", stack.namespace, "delete", "pod", first["metadata"]["name"], "--wait=true", timeout=180
        )
        stack.wait_rollout(deployment, timeout=900)
    second = until(
        "the new pod",
        lambda: [
            p
            for p in pods_of(stack, deployment)
            if p["metadata"]["uid"] != first["metadata"]["uid"]
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ],
        timeout=60,
    )[0]
    second_ready = _ready_seconds(second)
    after = _cache_listing(stack, claim)
    model_files = {p: v for p, v in before.items() if p.startswith("huggingface/hub/models--")}
    assert {p: after.get(p) for p in model_files} == model_files, "the restart changed the cached weights"
    assert not [p for p in after if p.startswith("huggingface/hub/") and p not in before], (
        f"the restart added files to the hub cache: {sorted(set(after) - set(before))}"
    )
    logs = stack.cluster.kubectl("-n", stack.namespace, "logs", second["metadata"]["name"], check=False).stdout
    assert not re.search(r"(?i)downloading|fetching \d+ files", logs), logs[-2000:]
    say(
        f"  {deployment}: first pod Ready after {first_ready:.0f}s (weights arrived while it started), "
        f"restarted pod after {second_ready:.0f}s (cache)"
    )
    stack.timings.update({"vllm_first_ready_s": first_ready, "vllm_restart_ready_s": second_ready})
    assert second_ready < first_ready, (first_ready, second_ready)
    stack.wait_gateway_ready()  # the gateway's health check sees the new pod a few seconds later
    assert chat(gateway, model["modelName"]).status_code == 200


def _client_pod(stack, name: str, labels: dict) -> str:
    """A pod on the mock image (python3, curl) that only sleeps: a client to `kubectl exec` curl in."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": stack.namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "client",
                    "image": stack.images["mock-openai"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    return name


def _curl(stack, pod: str, url: str, *args: str) -> tuple[int, str]:
    """(curl's exit status, its output) from inside `pod`: 0 answered, 7 could not connect, 28 timed out."""
    proc = stack.cluster.kubectl(
        "-n",
        stack.namespace,
        "exec",
        pod,
        "--",
        "curl",
        "-sS",
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
        "--connect-timeout",
        "3",
        "--max-time",
        "10",
        *args,
        url,
        check=False,
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _set_network_policy(stack, enabled: bool) -> None:
    with step(f"helm upgrade api-gateway --set networkPolicy.enabled={str(enabled).lower()}"):
        stack.helm(
            "upgrade",
            "api-gateway",
            str(CHARTS / "api-gateway"),
            "-n",
            stack.namespace,
            *stack.values_args("api-gateway"),
            "--set",
            f"networkPolicy.enabled={str(enabled).lower()}",
            "--wait",
            "--timeout",
            "5m",
            timeout=360,
        )


def test_network_policies_let_only_the_gateway_reach_models_and_only_the_ui_reach_the_gateway(stack, gateway):
    """networkPolicy.enabled on a cluster that enforces it (the local cluster runs kube-router's
    firewall): a pod that is not the gateway cannot reach a model, the gateway can; a pod labelled
    like Open WebUI (the chart's default ingressFrom) reaches the gateway, any other pod cannot."""
    if stack.cluster.provider != "local" and os.environ.get("LLM_CHARTS_NETPOL_ENFORCED") != "1":
        # Fail, never skip: a cluster that does not enforce them would pass every check here.
        pytest.fail(
            "only the local cluster is known to enforce NetworkPolicies (kube-router): set "
            "LLM_CHARTS_NETPOL_ENFORCED=1 for a cluster whose network plugin does, or deselect this "
            "test (-k 'not network_policies') on one that does not",
            pytrace=False,
        )
    model = _models("gguf")[0]  # llama-server: answers at once
    svc = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", _service(model))
    model_url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v1/models"
    model_pod = stack.pods(",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items()))[0]
    target = svc["spec"]["ports"][0]["targetPort"]  # a number or the name of a container port
    port = (
        target
        if isinstance(target, int)
        else next(
            p["containerPort"]
            for c in model_pod["spec"]["containers"]
            for p in c.get("ports", [])
            if p["name"] == target
        )
    )
    model_pod_url = f"http://{model_pod['status']['podIP']}:{port}/v1/models"
    gw = stack.cluster.kubectl_json("-n", stack.namespace, "get", "service", stack.gateway_service())
    gateway_url = f"http://{gw['spec']['clusterIP']}:80"
    chat_args = (
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"model": model["modelName"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    )
    stranger = _client_pod(stack, "e2e-netpol-stranger", {"app.kubernetes.io/name": "e2e-stranger"})
    webui = _client_pod(stack, "e2e-netpol-webui", {"app.kubernetes.io/name": "openwebui"})
    try:
        for pod in (stranger, webui):
            stack.cluster.kubectl(
                "-n", stack.namespace, "wait", f"pod/{pod}", "--for=condition=Ready", "--timeout=120s", timeout=150
            )
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
        until(
            "the gateway closed to other pods", lambda: _curl(stack, stranger, f"{gateway_url}/healthz")[0] in (7, 28)
        )
        rc, out = _curl(stack, stranger, f"{gateway_url}/v1/chat/completions", *chat_args)
        assert rc in (7, 28), f"the stranger chatted through the gateway: curl {rc}: {out}"
        # The allowed client chats through the gateway, so the gateway still reaches the model.
        rc, out = until(
            "a chat from the Open WebUI-labelled pod",
            lambda: (
                (r := _curl(stack, webui, f"{gateway_url}/v1/chat/completions", *chat_args))[0] == 0
                and r[1].endswith("200")
                and r
            ),
        )
        assert '"choices"' in out, out
        # The gateway is up and serving, and the stranger is still turned away (not a rollout gap).
        rc, out = _curl(stack, stranger, f"{gateway_url}/healthz")
        assert rc in (7, 28), f"the stranger reached the gateway with the policies on: curl {rc}: {out}"
        # And from this host (the node: kube-router lets a node reach its pods, as kubelet probes need).
        before = generated(stack, model)
        resp = chat(gateway, model["modelName"])
        assert resp.status_code == 200, resp.text
        assert answered_by(stack, model, before)
    finally:
        _set_network_policy(stack, False)
        stack.cluster.kubectl("-n", stack.namespace, "delete", "pod", stranger, webui, "--wait=false", check=False)


def test_model_scaled_to_zero_answers_503_then_recovers(stack, gateway):
    model = _models("gguf")[0]  # llama-server: back in seconds
    name, deployment = model["modelName"], _service(model)
    stack.scale(deployment, 0)
    try:
        until(f"{deployment} pods gone", lambda: not pods_of(stack, deployment), timeout=120)
        # The gateway's health checks run every 5 s (healthCheck.intervalSeconds): allow a few.
        # (r,): a 503 Response is falsy (requests' Response.__bool__ is `ok`), which `until` would not return.
        (resp,) = until(
            "503 from the gateway", lambda: (r := chat(gateway, name)).status_code == 503 and (r,), timeout=60
        )
        assert resp.headers.get("Retry-After", "").isdigit(), dict(resp.headers)
        assert resp.json()["error"], resp.text
        listed = models_by_id(gateway)
        assert listed[name]["ready"] is False, listed[name]
    finally:
        stack.scale(deployment, model.get("replicas", 1))
    stack.wait_rollout(deployment)
    resp = until("200 after scaling up", lambda: (r := chat(gateway, name)).status_code == 200 and r, timeout=120)
    assert resp.json()["choices"], resp.text


def test_upgrade_that_adds_a_model_makes_it_routable(stack, gateway):
    """A GGUF entry added to the list: written to the node, `helm upgrade` of its chart and the
    gateway, and it answers under its alias (llama-server: it starts in a second)."""
    added = {"modelName": "e2e-added", "gguf": "e2e/added.gguf", "aliases": ["e2e-added-alias"]}
    stack.extra_models.append(added)
    stack.seed_gguf()
    for chart in ("ramalama-models", "api-gateway"):
        stack.install(chart)  # helm upgrade; no kubectl rollout restart anywhere
    before = {}
    resp = until(
        "the added model answers", lambda: (r := chat(gateway, "e2e-added-alias")).status_code == 200 and r, timeout=180
    )
    assert resp.json()["choices"], resp.text
    assert answered_by(stack, added, before), "no pod of ramalama-e2e-added generated tokens"


def test_uninstall_keeps_the_model_caches(stack):
    kept_before = {
        p["metadata"]["name"]
        for p in stack.cluster.kubectl_json("-n", stack.namespace, "get", "pvc")["items"]
        if p["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
    }
    stack.uninstall_all()
    left = stack.cluster.kubectl_json("-n", stack.namespace, "get", "all,pvc,configmap")["items"]
    pvcs = {i["metadata"]["name"] for i in left if i["kind"] == "PersistentVolumeClaim"}
    workloads = [f"{i['kind']}/{i['metadata']['name']}" for i in left if i["kind"] in ("Deployment", "Service")]
    assert kept_before, "no cache PVC is marked helm.sh/resource-policy: keep"
    assert kept_before <= pvcs, f"kept caches gone: {kept_before - pvcs}"
    assert not workloads, workloads
    if stack.cluster.provider == "local":  # the node is this host: the GGUF files are still there
        for model in _models("gguf"):
            assert (Path(GGUF_DIR) / model["gguf"]).exists(), model["gguf"]
    say(f"after uninstall: kept {sorted(pvcs)}; GGUF files stay on the node under {GGUF_DIR}")

"""Scale to zero with the real KEDA, the api-gateway's hold, and the drain (issue 17.4).

KEDA v2.20.2 (the pinned CRDs' version), operator and metrics apiserver, is built from its Go
module and run in the cluster (tools/stack/keda.py). Its own namespace holds a small stack:
the api-gateway and ramalama-models with one llama-server model whose entry sets
`autoscaling` (minReplicas 0, woken by the gateway's /demand), `hold` and `drain`. The tests
read how long each step takes and print it (docs/autoscaling.md has the numbers).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from stack import install, keda, models

from e2e.conftest import REPO

NAMESPACE = os.environ.get("LLM_CHARTS_E2E_AUTOSCALE_NAMESPACE", "llm-autoscale-e2e")
WORKDIR = REPO / "build" / "e2e-autoscale"
MODEL = "scale-tiny"
DEPLOYMENT = f"ramalama-{MODEL}"
COOLDOWN = 30
POLLING = 5
# A context long enough for a stream of STREAM_TOKENS; the CPU limit makes it last (about
# 25 s here), longer than the drain's delay, so the hook's wait for idle is what keeps it.
CONTEXT = 8192
STREAM_TOKENS = 7000
DRAIN_DELAY = 11  # > the gateway's discovery interval + DNS TTL (5 + 5)
ENTRY = {
    "modelName": MODEL,
    "gguf": "autoscale/scale-tiny-8k.gguf",
    "contextSize": CONTEXT,
    "threads": 1,
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "512Mi"}},
    "hold": {"timeoutSeconds": 240},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 1,
        "pollingInterval": POLLING,
        "cooldownPeriod": COOLDOWN,
        "demand": {"gatewayUrl": f"http://api-gateway.{NAMESPACE}.svc:9145"},
    },
    "drain": {"terminationGracePeriodSeconds": 180, "delaySeconds": DRAIN_DELAY},
}
# Issue 14.5: a model with three pods the api-gateway (installed before it) must find and spread over.
SPREAD = {
    "modelName": "spread-tiny",
    "gguf": "autoscale/spread-tiny.gguf",
    "replicas": 3,
    "threads": 1,
    "resources": {"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"cpu": "300m", "memory": "256Mi"}},
    "drain": {"delaySeconds": DRAIN_DELAY},
}
SPREAD_DEPLOYMENT = "ramalama-spread-tiny"
TIMINGS: dict[str, float] = {}


class AutoscaleStack(install.Stack):
    """Only the autoscaled model (a GGUF with a long context) and the three-pod one."""

    def catalog(self) -> dict:
        return {"models": [ENTRY, SPREAD], "global": models.catalog(vllm=False)["global"]}

    def seed_gguf(self) -> None:
        import tempfile

        import tinymodels

        pod = self.seed_pod(
            [{"name": "host", "hostPath": {"path": "/var/lib", "type": "Directory"}}],
            [{"name": "host", "mountPath": "/host/var/lib"}],
            name=f"{install.SEED_POD}-autoscale",
        )
        with tempfile.TemporaryDirectory() as tmp:
            data = tinymodels.write_gguf(Path(tmp) / "m.gguf", context=CONTEXT).read_bytes()
        target = "/host" + install.GGUF_DIR
        self.exec_in(
            pod, "sh", "-c", f"mkdir -p {target} && tar -x -C {target} && chmod -R a+rX {target}",
            input=models.files_tar({ENTRY["gguf"]: data, SPREAD["gguf"]: models.gguf_for(SPREAD)}),
        )  # fmt: skip
        self.cluster.kubectl("-n", self.namespace, "delete", "pod", pod, "--wait=false")


@pytest.fixture(scope="module")
def keda_installed(cluster, warm_up):
    if warm_up.get("keda") is not None:
        warm_up["keda"].result()  # the build started with the session's other builds
    started = time.monotonic()
    keda.install(cluster)
    TIMINGS["keda install"] = time.monotonic() - started
    yield
    keda.uninstall(cluster)


@pytest.fixture(scope="module")
def scaled(cluster, warm_up, keda_installed):
    s = AutoscaleStack(cluster, NAMESPACE, WORKDIR, vllm=False, openwebui=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    try:
        s.prepare(warm_up["images"])
        s.install("api-gateway")
        s.install("ramalama-models", wait=False)
    except Exception:
        print(s.diagnostics())
        raise
    yield s
    if TIMINGS:
        print("autoscaling timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))
    s.uninstall_all()
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", check=False, timeout=300)


def until(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, RuntimeError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def replicas(s) -> int:
    return int(s.cluster.kubectl_json("-n", NAMESPACE, "get", "deployment", DEPLOYMENT)["spec"].get("replicas", 0))


def model_pods(s) -> list[dict]:
    return s.pods(f"llm-stack/model={MODEL}")


def at_zero(s) -> bool:
    return replicas(s) == 0 and not model_pods(s)


def wait_zero(s, timeout: float = COOLDOWN + 240) -> float:
    started = time.monotonic()
    until(f"{DEPLOYMENT} at 0 replicas", lambda: at_zero(s), timeout=timeout, interval=2)
    return time.monotonic() - started


def chat(url: str, **extra) -> requests.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=300)


def demand(s) -> dict:
    with s.cluster.service_url(NAMESPACE, "api-gateway", 9145) as url:
        return requests.get(f"{url}/demand", params={"model": MODEL}, timeout=5).json()


class Stream(threading.Thread):
    """A streamed chat of `tokens` tokens, read to its end; records events, [DONE], errors."""

    def __init__(self, url: str, tokens: int):
        super().__init__(daemon=True)
        self.url, self.tokens = url, tokens
        self.first = threading.Event()
        self.events, self.done, self.error, self.ended, self.status = 0, False, None, None, None
        self.finish, self.usage = None, None

    def run(self):
        body = {
            "model": MODEL, "stream": True, "max_tokens": self.tokens, "ignore_eos": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "count"}],
        }  # fmt: skip
        try:
            with requests.post(f"{self.url}/v1/chat/completions", json=body, stream=True, timeout=300) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if not line.startswith(b"data: "):
                        continue
                    if line.strip() == b"data: [DONE]":
                        self.done = True
                    else:
                        chunk = json.loads(line[6:])
                        self.events += 1
                        for choice in chunk.get("choices") or []:
                            self.finish = choice.get("finish_reason") or self.finish
                        self.usage = chunk.get("usage") or self.usage
                        self.first.set()
        except Exception as exc:
            self.error = repr(exc)
        finally:
            self.ended = time.monotonic()
            self.first.set()


def test_keda_runs_with_the_pinned_version(keda_installed, cluster):
    deploy = cluster.kubectl_json("-n", keda.NAMESPACE, "get", "deployment", "keda-operator")
    assert deploy["status"].get("availableReplicas") == 1
    logs = cluster.kubectl("-n", keda.NAMESPACE, "logs", "deployment/keda-operator", "--tail=-1").stdout
    assert f"KEDA Version: {keda.VERSION}" in logs, logs[-2000:]


def test_an_idle_model_goes_to_zero(scaled):
    so = scaled.cluster.kubectl_json("-n", NAMESPACE, "get", "scaledobject", DEPLOYMENT)
    assert so["spec"]["minReplicaCount"] == 0
    TIMINGS["install to zero"] = wait_zero(scaled)
    ready = until(
        "the ScaledObject Ready",
        lambda: [c for c in scaled.cluster.kubectl_json("-n", NAMESPACE, "get", "scaledobject", DEPLOYMENT)["status"]["conditions"] if c["type"] == "Ready"],
        timeout=60,
    )  # fmt: skip
    assert ready[0]["status"] == "True", ready


def test_the_first_request_is_held_wakes_the_model_and_is_answered(scaled):
    wait_zero(scaled)
    seen_held = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                d = demand(scaled)
                if d.get("held", 0) >= 1:
                    seen_held.append(d)
            except requests.RequestException:
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    with scaled.gateway() as url:
        watcher.start()
        started = time.monotonic()
        resp = chat(url)
        TIMINGS["wake (request at 0 to answer)"] = time.monotonic() - started
        stop.set()
        watcher.join()
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"], resp.text
    assert seen_held, "the gateway's /demand never showed the request held"
    assert replicas(scaled) == 1


def test_after_the_cooldown_the_model_returns_to_zero(scaled):
    with scaled.gateway() as url:
        until("the model answers", lambda: chat(url).status_code == 200, timeout=300, interval=2)
    took = wait_zero(scaled)
    TIMINGS["last answer to zero"] = took
    # Not before the cooldown (KEDA counts it from its last poll that saw demand).
    assert took >= COOLDOWN - POLLING, took


def _stream_through(scaled, disrupt, what: str) -> Stream:
    with scaled.gateway() as url:
        until("the model answers", lambda: chat(url).status_code == 200, timeout=300, interval=2)
        [pod] = [p["metadata"]["name"] for p in model_pods(scaled) if not p["metadata"].get("deletionTimestamp")]
        stream = Stream(url, STREAM_TOKENS)
        stream.start()
        assert stream.first.wait(60) and stream.events, f"no stream: {stream.error}"
        disrupted = time.monotonic()
        disrupt()
        until(
            f"{pod} terminating",
            lambda: scaled.cluster.kubectl_json("-n", NAMESPACE, "get", "pod", pod)["metadata"].get(
                "deletionTimestamp"
            ),
            timeout=60,
        )
        stream.join(300)
    events = scaled.cluster.kubectl(
        "-n", NAMESPACE, "get", "events", f"--field-selector=involvedObject.name={pod}", check=False
    ).stdout  # fmt: skip
    assert not stream.is_alive(), "the stream never ended"
    assert stream.status == 200 and stream.error is None, (
        f"{stream.error} after {stream.events} events; {pod}:\n{events}"
    )
    assert stream.done, f"the stream was cut: {stream.events} events, no [DONE]"
    # Every token generated: stopped by max_tokens (an event may carry several tokens: llama-server
    # holds back an incomplete UTF-8 sequence).
    assert stream.finish == "length", (stream.finish, stream.events)
    assert stream.usage and stream.usage.get("completion_tokens") == STREAM_TOKENS, stream.usage
    TIMINGS[f"stream after {what}"] = stream.ended - disrupted
    # The stream outlived the drain's first step: the hook waited for it, not only the delay.
    assert stream.ended - disrupted > DRAIN_DELAY, stream.ended - disrupted
    return stream


def test_a_stream_running_during_the_scale_down_completes(scaled):
    """KEDA scales the model to 0 (paused at 0 replicas) while a long stream runs."""
    paused = "autoscaling.keda.sh/paused-replicas"

    def scale_down():
        scaled.cluster.kubectl("-n", NAMESPACE, "annotate", "scaledobject", DEPLOYMENT, f"{paused}=0", "--overwrite")

    try:
        _stream_through(scaled, scale_down, "scale-down")
        until("KEDA at 0", lambda: at_zero(scaled), timeout=240, interval=2)
    finally:
        scaled.cluster.kubectl("-n", NAMESPACE, "annotate", "scaledobject", DEPLOYMENT, f"{paused}-", check=False)


def test_a_stream_running_during_a_rollout_completes(scaled):
    def rollout():
        scaled.cluster.kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{DEPLOYMENT}")

    _stream_through(scaled, rollout, "rollout")
    scaled.wait_rollout(DEPLOYMENT, timeout=240)


# --- issue 14.5: the gateway finds pods at run time ---------------------------------------------


def spread_pods(s) -> list[dict]:
    return [p for p in s.pods("llm-stack/model=spread-tiny") if not p["metadata"].get("deletionTimestamp")]


def predicted(s, pod: dict) -> float:
    """llama-server's own count of generated tokens, read inside the pod (its image has curl)."""
    text = s.cluster.kubectl(
        "-n", NAMESPACE, "exec", pod["metadata"]["name"], "-c", "llama-server", "--",
        "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:8080/metrics", timeout=60,
    ).stdout  # fmt: skip
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("llamacpp:tokens_predicted_total"))


def spread_chat(url: str) -> requests.Response:
    body = {"model": "spread-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def _spread_ready(s):
    """All three pods Ready, and every gateway pod routing to all three (each finds and
    health-checks them on its own): one answer through one gateway pod would not say that."""
    s.wait_rollout(SPREAD_DEPLOYMENT, timeout=300)
    s.wait_gateway_ready({"spread-tiny"}, replicas=3)


def test_the_gateway_installed_first_routes_the_models_that_came_after_it(scaled):
    """api-gateway was installed (and Ready) before ramalama-models: no restart, and it routes them."""
    _spread_ready(scaled)
    gateways = scaled.pods("app.kubernetes.io/name=api-gateway")
    deploy = scaled.cluster.kubectl_json("-n", NAMESPACE, "get", "deployment", SPREAD_DEPLOYMENT)
    assert len(gateways) == 2, [g["metadata"]["name"] for g in gateways]  # the chart's default replicas
    for gw in gateways:
        assert gw["metadata"]["creationTimestamp"] <= deploy["metadata"]["creationTimestamp"]
        assert all(c["restartCount"] == 0 for c in gw["status"]["containerStatuses"]), gw["status"]


def test_a_model_with_three_pods_gets_traffic_on_all_three(scaled):
    _spread_ready(scaled)
    pods = spread_pods(scaled)
    assert len(pods) == 3
    before = {p["metadata"]["name"]: predicted(scaled, p) for p in pods}
    with scaled.gateway() as url:
        for _ in range(30):
            assert spread_chat(url).status_code == 200
    grew = {p["metadata"]["name"]: predicted(scaled, p) - before[p["metadata"]["name"]] for p in pods}
    assert all(n > 0 for n in grew.values()), f"tokens generated per pod over 30 requests: {grew}"


class Load(threading.Thread):
    """Sequential chats for spread-tiny until stopped; each status with its send time."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.results = url, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                status = spread_chat(self.url).status_code
            except requests.RequestException as exc:
                status = repr(exc)
            self.results.append((sent, status))


def test_a_pod_deleted_under_load_loses_no_request(scaled):
    _spread_ready(scaled)
    victim = spread_pods(scaled)[0]["metadata"]["name"]
    with scaled.gateway() as url:
        load = Load(url)
        load.start()
        time.sleep(3)
        deleted = time.monotonic()
        scaled.cluster.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")
        until(f"{victim} gone", lambda: victim not in {p["metadata"]["name"] for p in scaled.pods("llm-stack/model=spread-tiny")}, timeout=120, interval=2)  # fmt: skip
        time.sleep(3)
        load.stop.set()
        load.join(60)
    after = [r for r in load.results if r[0] >= deleted]
    failed = [r for r in load.results if r[1] != 200]
    assert len(after) > 10, load.results
    assert not failed, f"{len(failed)} of {len(load.results)} requests failed: {failed[:5]}"


def test_services_deleted_and_recreated_are_routed_again(scaled):
    """Both Services of the model deleted, the pods replaced (new addresses), the Services put back
    as the chart renders them: routed again within discovery interval + DNS TTL."""
    _spread_ready(scaled)
    manifest = scaled.helm("get", "manifest", "ramalama-models", "-n", NAMESPACE).stdout
    services = [
        d
        for d in yaml.safe_load_all(manifest)
        if d and d["kind"] == "Service" and d["metadata"]["name"].startswith(SPREAD_DEPLOYMENT)
    ]
    assert len(services) == 2, [d["metadata"]["name"] for d in services]
    old_ips = {p["status"]["podIP"] for p in spread_pods(scaled)}
    for d in services:
        scaled.cluster.kubectl("-n", NAMESPACE, "delete", "service", d["metadata"]["name"], "--wait=true")
    scaled.cluster.kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{SPREAD_DEPLOYMENT}")
    scaled.wait_rollout(SPREAD_DEPLOYMENT, timeout=300)
    until("every old pod gone", lambda: len(scaled.pods("llm-stack/model=spread-tiny")) == 3, timeout=180, interval=2)
    new_ips = {p["status"]["podIP"] for p in spread_pods(scaled)}
    assert not old_ips & new_ips, (old_ips, new_ips)
    with scaled.gateway() as url:
        scaled.cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump_all(services))
        recreated = time.monotonic()
        until("spread-tiny routed again", lambda: spread_chat(url).status_code == 200, timeout=60, interval=0.5)
    TIMINGS["Services recreated to routed"] = time.monotonic() - recreated
    # discovery every 5 s + CoreDNS TTL 5 s + a health check: well inside 20 s.
    assert TIMINGS["Services recreated to routed"] < 20, TIMINGS

"""The gateway-api/ chart's Gateway and HTTPRoute carried by a real Gateway API implementation:
Traefik v3 (tools/stack/traefik.py), in front of a stack of its own (namespace `llm-traefik`:
the llama-server model, the api-gateway, Open WebUI; vLLM's path is test_stack.py's).

`/v1` reaches the api-gateway and `/` Open WebUI, and a stream through Traefik arrives as it is
generated: first-event time and inter-event gaps are measured through Traefik and directly at
the api-gateway's Service, and must match.
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import time
from pathlib import Path

import pytest
import requests
from progress import say, step
from stack import images as stack_images
from stack import install, traefik
from stack import models as stack_models

from e2e.test_stack import TIMEOUT

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "llm-traefik"
GATEWAY_CLASS = "llm-traefik"
HOST = "llm.e2e.test"
WORKDIR = REPO / "build" / "e2e" / "traefik"


@pytest.fixture(scope="module")
def exposed(cluster, images):
    from harness import paths

    with step("build the Traefik image"):
        ref = cluster.load_image(stack_images.build_many(["traefik"])["traefik"])
    for crd in sorted((paths.crds_dir() / "gateway-api").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    stack = install.Stack(cluster, NAMESPACE, WORKDIR, vllm=False)
    built: concurrent.futures.Future = concurrent.futures.Future()
    built.set_result({n: images[n] for n in install.needed_images(vllm=False)})  # built by the session
    stack.prepare(built)
    stack.install_all()
    # A slower engine (CPU limit), so a stream lasts seconds and a buffering proxy would show.
    stack.install("ramalama-models", extra=("--set", "defaults.resources.limits.cpu=150m"))
    traefik.install(cluster, NAMESPACE, ref, GATEWAY_CLASS)
    with step("helm install llm-gateway-api (Gateway + HTTPRoute) for Traefik"):
        stack.helm(
            "upgrade",
            "--install",
            "llm-gateway-api",
            str(REPO / "gateway-api"),
            "-n",
            NAMESPACE,
            "-f",
            str(stack.models_file()),
            "--set",
            f"gateway.className={GATEWAY_CLASS}",
            "--set",
            f"gateway.httpPort={traefik.WEB_PORT}",
            "--set",
            f"hosts={{{HOST}}}",
        )
        cluster.kubectl(
            "-n", NAMESPACE, "wait", "gateway", "--all", "--for=condition=Programmed", "--timeout=120s", timeout=150
        )
    yield stack
    with step(f"remove the Traefik stack ({NAMESPACE})"):
        stack.helm("uninstall", "llm-gateway-api", "-n", NAMESPACE, check=False)
        stack.uninstall_all()
        traefik.uninstall(cluster, NAMESPACE, ref, GATEWAY_CLASS)
        # The pods stop gracefully while the next tests run (no controller of the namespace's
        # objects is gone: nothing can block it); the next run's setup waits for a clean start.
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False, timeout=60)


@pytest.fixture
def through_traefik(exposed):
    with exposed.cluster.service_url(NAMESPACE, traefik.NAME, traefik.WEB_PORT) as url:
        yield url


def _get(url: str, path: str) -> requests.Response:
    return requests.get(f"{url}{path}", headers={"Host": HOST}, timeout=60)


def test_the_httproute_is_accepted_with_every_backend_resolved(exposed):
    route = exposed.cluster.kubectl_json("-n", NAMESPACE, "get", "httproute", "llm-gateway-api")
    parents = route["status"]["parents"]
    assert parents, route["status"]
    conditions = {c["type"]: c["status"] for c in parents[0]["conditions"]}
    assert conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True", parents


def test_v1_reaches_the_gateway_and_root_reaches_open_webui(exposed, through_traefik):
    def until_routed():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = _get(through_traefik, "/v1/models")
                if r.status_code == 200:
                    return r
            except requests.RequestException:
                pass
            time.sleep(1)
        pytest.fail(f"Traefik never routed /v1/models to the gateway: {r.status_code} {r.text[:300]}")

    models = until_routed().json()
    with exposed.gateway() as direct:
        assert {m["id"] for m in models["data"]} == {
            m["id"] for m in requests.get(f"{direct}/v1/models", timeout=30).json()["data"]
        }
    name = stack_models.enabled(exposed.catalog(), "gguf")[0]["modelName"]
    body = {"model": name, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
    chat = requests.post(f"{through_traefik}/v1/chat/completions", json=body, headers={"Host": HOST}, timeout=TIMEOUT)
    assert chat.status_code == 200 and chat.json()["choices"], chat.text
    ui = _get(through_traefik, "/")
    assert ui.status_code == 200 and "Open WebUI" in ui.text, ui.text[:500]
    unknown_host = requests.get(f"{through_traefik}/v1/models", headers={"Host": "other.example"}, timeout=30)
    assert unknown_host.status_code == 404, unknown_host.text[:200]


def _stream(url: str, model: str, max_tokens: int) -> tuple[float, list[float]]:
    """(seconds to the first content event, gaps between content events) of a streamed chat."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "count"}],
    }
    sent = time.monotonic()
    times = []
    with requests.post(
        f"{url}/v1/chat/completions", json=body, headers={"Host": HOST}, stream=True, timeout=TIMEOUT
    ) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream"), resp.headers
        last = b""
        for line in resp.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                last = line[6:]
                if (
                    last != b"[DONE]"
                    and json.loads(last)["choices"]
                    and json.loads(last)["choices"][0].get("delta", {}).get("content")
                ):
                    times.append(time.monotonic())
        assert last == b"[DONE]", last
    return times[0] - sent, [b - a for a, b in zip(times, times[1:])]


def test_streaming_through_traefik_is_unbuffered(exposed, through_traefik):
    """The same stream directly at the api-gateway's Service and through Traefik, twice each: the
    events arrive spread over the generation through Traefik as they do directly (a buffering
    proxy hands them over in one read at the end: no spread, gaps of ~0)."""
    name = stack_models.enabled(exposed.catalog(), "gguf")[0]["modelName"]
    results = {}
    with exposed.gateway() as direct:
        for where, url in (("direct", direct), ("traefik", through_traefik)) * 2:
            first, gaps = _stream(url, name, max_tokens=400)
            results.setdefault(where, []).append((first, gaps))
            say(
                f"  {where}: first event {first * 1000:.0f} ms, {len(gaps) + 1} events over {sum(gaps) * 1000:.0f} ms, "
                f"gaps median {statistics.median(gaps) * 1000:.2f} ms, max {max(gaps) * 1000:.1f} ms"
            )
    direct_spread = min(sum(g) for _, g in results["direct"])
    for first, gaps in results["traefik"]:
        distinct = len({round(sum(gaps[:i]), 3) for i in range(len(gaps) + 1)})
        assert len(gaps) >= 100, len(gaps)
        assert distinct >= 10 and sum(gaps) > 0.3 * direct_spread, (distinct, sum(gaps), direct_spread)
        assert first < min(f for f, _ in results["direct"]) + 1.0, (first, results["direct"])


# A backend that streams one SSE event a second for 80 s: longer than every default timeout of
# Traefik's that could cut a response (its entry points read a request for at most 60 s).
_SLOW_SERVER = r"""
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(80):
            d = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(d), d))
            self.wfile.flush()
            time.sleep(1)
        self.wfile.write(b"0\r\n\r\n")
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""


def test_a_stream_longer_than_traefiks_default_timeouts_is_not_cut(exposed, through_traefik):
    """An 80 s stream through the chart's Gateway (its listener, Traefik's defaults), on a route
    of its own with the chart's route timeouts, arrives whole."""
    route = exposed.cluster.kubectl_json("-n", NAMESPACE, "get", "httproute", "llm-gateway-api")
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "e2e-slow", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "e2e-slow"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "slow",
                        "image": exposed.images["mock-openai"],
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", _SLOW_SERVER],
                        "ports": [{"containerPort": 8080}],
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "e2e-slow", "namespace": NAMESPACE},
            "spec": {"selector": {"app.kubernetes.io/name": "e2e-slow"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "e2e-slow", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": route["spec"]["parentRefs"],
                "hostnames": route["spec"]["hostnames"],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/e2e-slow"}}],
                        "backendRefs": [{"name": "e2e-slow", "port": 80}],
                        "timeouts": route["spec"]["rules"][0]["timeouts"],
                    }
                ],
            },
        },
    ]
    exposed.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    exposed.cluster.kubectl(
        "-n", NAMESPACE, "wait", "pod/e2e-slow", "--for=condition=Ready", "--timeout=120s", timeout=150
    )

    def routed() -> bool:  # Traefik has the route (before, `/` sends the path to Open WebUI)
        with requests.get(f"{through_traefik}/e2e-slow", headers={"Host": HOST}, stream=True, timeout=30) as r:
            return r.headers.get("Content-Type", "").startswith("text/event-stream")

    deadline = time.monotonic() + 60
    while not routed():
        assert time.monotonic() < deadline, "Traefik never routed /e2e-slow"
        time.sleep(1)
    start = time.monotonic()
    events = []
    with requests.get(f"{through_traefik}/e2e-slow", headers={"Host": HOST}, stream=True, timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        for line in resp.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                events.append(line[6:])
    took = time.monotonic() - start
    say(f"  an 80 s stream through Traefik: {len(events)} events in {took:.1f} s")
    assert events == [str(i).encode() for i in range(80)], events[-3:]
    assert took > 75, took

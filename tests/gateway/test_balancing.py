"""Endpoints found at run time and balanced across pods, on real nginx.

The gateway resolves each model's headless Service through a DNS server the tests control
(tests/gateway/dns.py, answering as CoreDNS does: one SRV record per ready pod, its port, the
pod's A record). The "pods" are mock servers, each on its own loopback address, answering for
any model name (as llama-server does), so one set of pods can back every model here.

Bounds stated by these tests (3 pods unless said otherwise):
- least-request, 30 concurrent slow requests: every pod gets 8 to 12;
- round-robin, 30 requests: every pod gets 8 to 12;
- session and prefix: the same key reaches the same pod every time; 60 different keys spread
  so that every pod gets 10 to 30 of them (session), or within 3 of each other (prefix with
  warmSeconds, which spreads new keys evenly);
- prefix with bounded loads (the chart's loadFactor 1.25 and warmLoadFactor 2, warmSeconds on), 12 concurrent
  requests sharing one prefix: its own pod, which got it before, takes at most
  ceil(2 x 12 / 3) = 8, every other pod at most ceil(1.25 x 12 / 3) = 5.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from . import runner
from .api import describe, error, get, post
from .backends import MockBackend, closed_port
from .dns import DnsServer

NAMESPACE = "llm"
LONG_SYSTEM = "You are a careful assistant. " * 20  # longer than the prefixLength (256) used here

MODELS = [
    {"modelName": "lr", "huggingfaceId": "org/lr"},  # least-request: the chart's default
    {"modelName": "rr", "huggingfaceId": "org/rr", "balancing": {"policy": "round-robin"}},
    {"modelName": "sess", "huggingfaceId": "org/sess", "balancing": {"policy": "session"}},
    {
        "modelName": "pre",
        "huggingfaceId": "org/pre",
        "balancing": {"policy": "prefix", "prefixLength": 256, "warmSeconds": 300},
    },
    {"modelName": "late", "gguf": "late.gguf"},  # no Service when the gateway starts
    {"modelName": "moving", "huggingfaceId": "org/moving"},  # pods change under load
    {"modelName": "ping", "huggingfaceId": "org/ping", "healthPath": "/ping"},
    {"modelName": "wrongpath", "huggingfaceId": "org/wrongpath", "healthPath": "/not-served"},
    {"modelName": "flaky", "huggingfaceId": "org/flaky"},  # one of its pods refuses connects
    # Scaled to zero: requests wait up to 6 s for a pod, at most 2 of them.
    {"modelName": "sleepy", "huggingfaceId": "org/sleepy", "hold": {"timeoutSeconds": 6, "maxRequests": 2}},
]


def srv(model: dict) -> str:
    kind = "ramalama" if "gguf" in model else "vllm"
    return f"_http._tcp.{kind}-{model['modelName']}-pods.{NAMESPACE}.svc.cluster.local"


SRV = {m["modelName"]: srv(m) for m in MODELS}


@pytest.fixture(scope="module")
def dns():
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """Five mock pods on 127.0.0.21-25, llama-server style (any model name)."""
    logs = tmp_path_factory.mktemp("pods")
    started = [
        MockBackend("--model", "/mnt/models/pod.gguf", "--alias", f"pod{i}", log_dir=logs, host=f"127.0.0.{20 + i}")
        for i in range(1, 6)
    ]
    try:
        for p in started:
            p.start()
        yield started
    finally:
        for p in started:
            p.stop()


def addr(pod: MockBackend) -> tuple[str, int]:
    return pod.host, pod.port


@pytest.fixture(scope="module")
def gw(nginx_bin, dns, pods):
    three = [addr(p) for p in pods[:3]]
    for name in ("lr", "rr", "sess", "pre", "moving", "ping", "wrongpath"):
        dns.set_pods(SRV[name], three)
    dns.set_pods(SRV["flaky"], three + [("127.0.0.28", closed_port())])
    values = {
        "models": MODELS,
        "routing": {"discovery": {"servers": [dns.address], "intervalSeconds": 1, "timeoutSeconds": 1}},
        "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1},
        "timeouts": {"connectSeconds": 1, "readSeconds": 10},
    }
    try:
        gateway = runner.start(values, name="balancing")
    except runner.GatewayError as exc:
        pytest.fail(str(exc), pytrace=False)
    wait_ready(gateway, ["lr", "rr", "sess", "pre", "moving", "ping", "flaky"])
    yield gateway
    runner.cleanup(gateway)


def models(gw) -> dict:
    resp = get(gw, "/v1/models")
    assert resp.status_code == 200, describe(resp, gw)
    return {m["id"]: m for m in resp.json()["data"]}


def wait_until(check, timeout: float, interval: float = 0.1):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    return last


def wait_ready(gw, names, timeout: float = 10):
    ok = wait_until(lambda: all(models(gw)[n]["ready"] is True for n in names), timeout)
    assert ok, (models(gw), gw.context())


def pod_of(resp: requests.Response, pods) -> int:
    """Index (0-based) of the pod that answered: X-Mock-Backend ends in :<its port>."""
    port = int(resp.headers.get("X-Mock-Backend", ":0").rsplit(":", 1)[1])
    for i, p in enumerate(pods):
        if p.port == port:
            return i
    raise AssertionError(f"answered by no known pod: {dict(resp.headers)}")


def chat(model: str, content: str = "hi", system: str | None = None, history=(), **extra) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + list(history)
    messages.append({"role": "user", "content": content})
    return {"model": model, "messages": messages, "max_tokens": 2, **extra}


def send(gw, body, headers=None) -> requests.Response:
    return post(gw, "/v1/chat/completions", body, headers=headers)


def spread(gw, pods, bodies, concurrency: int = 1, headers=None) -> Counter:
    def one(body):
        resp = send(gw, body, headers)
        assert resp.status_code == 200, describe(resp, gw)
        return pod_of(resp, pods)

    with ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(one, bodies))


# --- discovery --------------------------------------------------------------------------


def test_nginx_starts_with_a_model_whose_service_does_not_exist_and_routes_it_once_it_appears(gw, dns, pods):
    # "late" has no Service yet: every other model works, it answers 503 model_not_ready.
    entry = models(gw)["late"]
    assert entry["ready"] is False and entry["status"] == "no_endpoints", entry
    err = error(send(gw, chat("late")), 503, gw, code="model_not_ready")
    assert "no ready replica" in err["message"]
    assert send(gw, chat("lr")).status_code == 200
    # The Service appears: routed within 10 s, with no restart and no reload.
    pid = gw.proc.pid
    t0 = time.monotonic()
    dns.set_pods(SRV["late"], [addr(pods[3])])
    routed = wait_until(lambda: send(gw, chat("late")).status_code == 200, 10, 0.2)
    assert routed, gw.context()
    took = time.monotonic() - t0
    assert took < 10, took
    assert pod_of(send(gw, chat("late")), pods) == 3
    assert gw.proc.pid == pid and gw.proc.poll() is None
    assert "reload" not in gw.error_log(200).lower()


def test_models_list_shows_ready_replicas(gw):
    entries = models(gw)
    assert entries["lr"]["replicas"] == {"ready": 3, "total": 3}, entries["lr"]
    # The OpenAI fields are still all there for clients that read only those.
    assert {"id", "object", "created", "owned_by"} <= set(entries["lr"])
    # A pod that refuses connects is found by the health checks and left out.
    assert entries["flaky"]["replicas"] == {"ready": 3, "total": 4}, entries["flaky"]


def test_a_service_recreated_with_new_addresses_is_routed_again(gw, dns, pods):
    for _ in range(3):
        assert send(gw, chat("moving")).status_code == 200
    # Deleted: no pods (503), then back on other addresses (a recreated Service, new pods).
    dns.set_pods(SRV["moving"], None)
    assert wait_until(lambda: send(gw, chat("moving")).status_code == 503, 10, 0.2), gw.context()
    dns.set_pods(SRV["moving"], [addr(pods[3]), addr(pods[4])])
    assert wait_until(lambda: send(gw, chat("moving")).status_code == 200, 10, 0.2), gw.context()
    seen = spread(gw, pods, [chat("moving") for _ in range(20)], concurrency=4)
    assert set(seen) == {3, 4}, seen
    dns.set_pods(SRV["moving"], [addr(p) for p in pods[:3]])
    assert wait_until(lambda: models(gw)["moving"]["replicas"]["total"] == 3, 10), models(gw)["moving"]


def test_pods_added_and_removed_under_load_lose_no_request(gw, dns, pods):
    dns.set_pods(SRV["moving"], [addr(p) for p in pods[:3]])
    assert wait_until(lambda: models(gw)["moving"]["replicas"]["total"] == 3, 10)
    results: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def load():
        session = requests.Session()
        while not stop.is_set():
            resp = session.post(gw.url + "/v1/chat/completions", json=chat("moving"), timeout=10)
            results.append((resp.status_code, pod_of(resp, pods) if resp.status_code == 200 else None))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        dns.set_pods(SRV["moving"], [addr(p) for p in pods[:4]])  # scaled up
        assert wait_until(lambda: any(p == 3 for _, p in results[-50:]), 10), "the new pod got no traffic"
        dns.set_pods(SRV["moving"], [addr(p) for p in pods[1:4]])  # pod 0 goes away
        time.sleep(4)  # discovery interval + a margin: requests in flight to pod 0 finish
        cut = len(results)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = Counter(s for s, _ in results)
    assert statuses == Counter({200: len(results)}), statuses
    after = Counter(p for _, p in results[cut:])
    assert 0 not in after and set(after) == {1, 2, 3}, after


def test_dns_outage_keeps_the_last_known_pods(gw, dns):
    dns.paused = True
    try:
        time.sleep(3)  # several discovery rounds fail
        for _ in range(5):
            assert send(gw, chat("lr")).status_code == 200
        assert models(gw)["lr"]["replicas"]["total"] == 3
    finally:
        dns.paused = False
    assert "endpoint lookup failed" in gw.error_log(400)


def test_a_truncated_answer_is_asked_again_over_tcp(gw, dns):
    before = dns.queries["tcp"]
    dns.truncate = True
    try:
        assert wait_until(lambda: dns.queries["tcp"] > before + 3, 5), dns.queries
        for _ in range(5):
            assert send(gw, chat("lr")).status_code == 200
        assert models(gw)["lr"]["replicas"]["total"] == 3
    finally:
        dns.truncate = False


# --- balancing ----------------------------------------------------------------------------


def test_least_request_spreads_concurrent_requests_by_load(gw, pods):
    seen = spread(gw, pods, [chat("lr", mock={"delay_ms": 600}) for _ in range(30)], concurrency=30)
    assert set(seen) == {0, 1, 2} and all(8 <= n <= 12 for n in seen.values()), seen


def test_round_robin_takes_each_pod_in_turn(gw, pods):
    seen = spread(gw, pods, [chat("rr") for _ in range(30)])
    assert set(seen) == {0, 1, 2} and all(8 <= n <= 12 for n in seen.values()), seen


def test_session_key_from_a_header_or_the_user_field_sticks_to_one_pod(gw, pods):
    by_header = spread(
        gw, pods, [chat("sess") for _ in range(15)], concurrency=3, headers={"X-Session-Id": "session-42"}
    )
    assert len(by_header) == 1, by_header
    by_field = spread(gw, pods, [chat("sess", user="alice") for _ in range(15)], concurrency=3)
    assert len(by_field) == 1, by_field
    # Many sessions: all pods used, within bounds.
    keys = spread(gw, pods, [chat("sess", user=f"user-{i}") for i in range(60)], concurrency=6)
    assert set(keys) == {0, 1, 2} and all(10 <= n <= 30 for n in keys.values()), keys
    assert gw.metric("gateway_balancer_decisions_total", model="sess", decision="affinity") >= 90


def test_prefix_sends_a_shared_system_prompt_and_every_turn_of_a_conversation_to_one_pod(gw, pods):
    # Different users, one long system prompt (longer than prefixLength): one pod has it cached.
    shared = spread(gw, pods, [chat("pre", f"question {i}", system=LONG_SYSTEM) for i in range(12)])
    assert len(shared) == 1, shared
    # A conversation with a short system prompt: every turn shares the first user message.
    turn1 = chat("pre", "Plan a trip to Turku", system="Be brief.")
    history = turn1["messages"][1:] + [{"role": "assistant", "content": "Take the train."}]
    turn2 = chat("pre", "And back?", system="Be brief.", history=history)
    turn3 = chat(
        "pre",
        "Cheaper?",
        system="Be brief.",
        history=turn2["messages"][1:] + [{"role": "assistant", "content": "Bus."}],
    )
    assert len(spread(gw, pods, [turn1, turn2, turn3, turn1])) == 1
    # Different conversations spread over every pod, evenly: with warmSeconds a new key goes to no
    # pod that got more than its share of the new keys lately (the ring alone gives these 60 keys
    # 22, 21 and 17; with it 20, 20, 20 in two runs of three, 21, 20, 19 in the third).
    many = spread(
        gw, pods, [chat("pre", f"conversation {i} starts here", system="Be brief.") for i in range(60)], concurrency=6
    )
    assert set(many) == {0, 1, 2} and max(many.values()) - min(many.values()) <= 3, many


def test_prefix_bounded_loads_spill_a_hot_prefix_instead_of_piling_it_on_one_pod(gw, pods):
    before = gw.metric("gateway_balancer_decisions_total", model="pre", decision="spill")
    bodies = [chat("pre", f"q{i}", system=LONG_SYSTEM, mock={"delay_ms": 1500}) for i in range(12)]
    seen = spread(gw, pods, bodies, concurrency=12)
    counts = sorted(seen.values(), reverse=True)
    assert counts[0] <= math.ceil(2 * 12 / 3) and all(n <= math.ceil(1.25 * 12 / 3) for n in counts[1:]), seen
    assert len(seen) >= 2, seen
    assert gw.metric("gateway_balancer_decisions_total", model="pre", decision="spill") > before


# --- failures per pod ---------------------------------------------------------------------


def test_a_failed_connect_is_retried_on_another_pod_and_the_pod_is_skipped(nginx_bin, dns, pods, tmp_path):
    # A pod that passed its health check, then died: the checks run once an hour here, so only
    # requests can find out.
    doomed = MockBackend("--model", "/mnt/models/pod.gguf", log_dir=tmp_path, host="127.0.0.29").start()
    dns.set_pods(SRV["flaky"], [addr(p) for p in pods[:3]] + [addr(doomed)])
    try:
        gw = runner.start(
            {
                "models": [m for m in MODELS if m["modelName"] == "flaky"],
                "routing": {"discovery": {"servers": [dns.address], "intervalSeconds": 1}},
                "healthCheck": {"intervalSeconds": 3600},
                "timeouts": {"connectSeconds": 1},
            },
            name="flaky",
        )
    except runner.GatewayError as exc:
        doomed.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        assert wait_until(
            lambda: (
                models(gw)["flaky"]["replicas"] == {"ready": 4, "total": 4} and models(gw)["flaky"]["ready"] is True
            ),
            10,
        ), models(gw)
        doomed.stop()
        seen = spread(gw, pods, [chat("flaky") for _ in range(40)], concurrency=4)
        assert sum(seen.values()) == 40 and set(seen) <= {0, 1, 2}, seen
        failures = gw.metric("gateway_upstream_failures_total", model="flaky", endpoint=doomed.address)
        # Skipped once it failed: at most a few requests tried it before the mark (a race of the
        # concurrent ones), not a quarter of them.
        assert 1 <= failures <= 4, failures
        assert models(gw)["flaky"]["replicas"] == {"ready": 3, "total": 4}, models(gw)["flaky"]
        # Each retried request was counted on the pod it moved to, and left it when done.
        assert gw.metric("gateway_upstream_in_flight", model="flaky") == 0
    finally:
        runner.cleanup(gw)
        dns.set_pods(SRV["flaky"], [addr(p) for p in pods[:3]])


def test_a_request_that_was_sent_is_never_retried(gw, pods):
    def chats():
        return sum(p.stats()["requests"].get("/v1/chat/completions", 0) for p in pods[:3])

    before = chats()
    resp = send(gw, chat("lr", mock={"close": True}))  # the pod reads it, then drops the connection
    error(resp, 502, gw, code="upstream_unavailable")
    assert chats() - before == 1, "the request reached more than one pod"
    # Answered by the error page, which has no ngx.ctx: it still took the request off its pod.
    assert gw.metric("gateway_upstream_in_flight", model="lr") == 0


def test_health_checks_use_each_entrys_own_health_path(gw):
    entries = models(gw)
    # The same pods: ready for the model checked on /ping, loading for /not-served (404).
    assert entries["ping"]["ready"] is True, entries["ping"]
    assert entries["wrongpath"]["status"] == "loading", entries["wrongpath"]
    error(send(gw, chat("wrongpath")), 503, gw, code="model_not_ready")
    assert "health check /not-served" in gw.error_log(400)


# --- observability and connections --------------------------------------------------------


def test_metrics_per_pod_in_flight_and_requests(gw, pods):
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(send, gw, chat("lr", mock={"delay_ms": 1500})) for _ in range(6)]
        time.sleep(0.7)
        in_flight = gw.metric("gateway_upstream_in_flight", model="lr")
        assert all(f.result().status_code == 200 for f in futures)
    assert in_flight == 6, in_flight
    assert gw.metric("gateway_upstream_in_flight", model="lr") == 0
    for p in pods[:3]:
        assert gw.metric("gateway_upstream_requests_total", model="lr", endpoint=p.address, status="200") > 0
    assert gw.metric("gateway_model_replicas", model="lr", state="ready") == 3


def test_keepalive_to_each_pod_is_kept(gw, pods):
    session = requests.Session()
    connections: dict[int, set] = {}
    for _ in range(30):
        resp = session.post(gw.url + "/v1/chat/completions", json=chat("rr"), timeout=10)
        assert resp.status_code == 200, describe(resp, gw)
        connections.setdefault(pod_of(resp, pods), set()).add(resp.headers["X-Mock-Connection"])
    # 10 requests per pod over one warm connection each (two at most: one per gateway worker).
    assert set(connections) == {0, 1, 2}, connections
    assert all(len(c) <= 2 for c in connections.values()), connections


# --- holding requests while a model wakes up ------------------------------------------------------


def test_a_request_for_a_model_at_zero_waits_for_its_first_pod_then_is_routed(gw, dns, pods):
    dns.set_pods(SRV["sleepy"], None)
    assert wait_until(lambda: models(gw)["sleepy"]["status"] == "no_endpoints", 10), models(gw)["sleepy"]
    with ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        plain = pool.submit(send, gw, chat("sleepy"))
        streamed = pool.submit(post, gw, "/v1/chat/completions", {**chat("sleepy"), "stream": True})
        # Both wait, counted where a scaler reads them.
        assert wait_until(lambda: gw.metric("gateway_requests_held", model="sleepy") == 2, 3), gw.context()
        assert gw.metric("gateway_model_demand", model="sleepy") == 2
        # The same as JSON, for KEDA's metrics-api scaler.
        demand = requests.get(gw.metrics_url.replace("/metrics", "/demand?model=sleepy"), timeout=5).json()
        assert demand == {"model": "sleepy", "held": 2, "in_flight": 0, "demand": 2}, demand
        time.sleep(1)
        dns.set_pods(SRV["sleepy"], [addr(pods[2])])  # the scaler woke it
        assert plain.result().status_code == 200, describe(plain.result(), gw)
        resp = streamed.result()
        assert resp.status_code == 200 and "[DONE]" in resp.text, describe(resp, gw)
        assert time.monotonic() - t0 < 6
    assert pod_of(plain.result(), pods) == 2
    assert gw.metric("gateway_requests_held", model="sleepy") == 0
    assert gw.metric("gateway_hold_total", model="sleepy", outcome="routed") >= 2


def test_demand_json_names_every_model_and_refuses_an_unknown_one(gw):
    base = gw.metrics_url.replace("/metrics", "/demand")
    every = requests.get(base, timeout=5).json()["models"]
    assert {"sleepy", "lr"} <= set(every) and every["lr"]["demand"] >= 0, every
    resp = requests.get(base + "?model=nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found", resp.text


def test_a_held_request_times_out_with_503_and_the_cap_refuses_a_burst(gw, dns):
    dns.set_pods(SRV["sleepy"], None)
    assert wait_until(lambda: models(gw)["sleepy"]["replicas"]["total"] == 0, 10)
    with ThreadPoolExecutor(3) as pool:
        t0 = time.monotonic()
        held = [pool.submit(send, gw, chat("sleepy")) for _ in range(2)]
        assert wait_until(lambda: gw.metric("gateway_requests_held", model="sleepy") == 2, 3)
        # A third one finds the model's two places taken: 503 at once.
        burst = send(gw, chat("sleepy"))
        err = error(burst, 503, gw, code="model_not_ready")
        assert "already wait" in err["message"] and time.monotonic() - t0 < 2
        for f in held:
            err = error(f.result(), 503, gw, code="model_not_ready")
            assert "within 6 s" in err["message"] and f.result().headers.get("Retry-After", "").isdigit()
        assert 5.5 <= time.monotonic() - t0 < 9
    assert gw.metric("gateway_hold_total", model="sleepy", outcome="timeout") >= 2
    assert gw.metric("gateway_hold_total", model="sleepy", outcome="full") >= 1


def test_a_client_that_hangs_up_ends_its_wait(gw, dns):
    dns.set_pods(SRV["sleepy"], None)
    assert wait_until(lambda: models(gw)["sleepy"]["replicas"]["total"] == 0, 10)
    before = gw.metric("gateway_hold_total", model="sleepy", outcome="gone")
    body = json.dumps(chat("sleepy")).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert wait_until(lambda: gw.metric("gateway_requests_held", model="sleepy") == 1, 3)
    sock.close()
    assert wait_until(lambda: gw.metric("gateway_requests_held", model="sleepy") == 0, 3), gw.context()
    assert gw.metric("gateway_hold_total", model="sleepy", outcome="gone") == before + 1

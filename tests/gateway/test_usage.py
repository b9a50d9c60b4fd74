"""Usage accounting on real nginx: token metrics from each answer's `usage` (plain and streamed), and per-key
budgets (requests and tokens per minute) shared by two gateway replicas through a real redis-server,
including Redis going away and coming back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .api import describe, error, post
from .backends import free_port

KEYS = {
    "rpm": "sk-test-budget-requests-5d2a9c",
    "tpm": "sk-test-budget-tokens-8e1b7f0a",
    "free": "sk-test-budget-free-3c6d2e9b",
}
API_KEYS = [
    {"name": "rpm", "key": KEYS["rpm"], "requestsPerMinute": 10},
    {"name": "tpm", "key": KEYS["tpm"], "tokensPerMinute": 1500},
    {"name": "free", "key": KEYS["free"]},
]
SECRET = "budget-keys"
REDIS_PASSWORD = "test-redis-password-4f9a"


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[name]}"}


class Redis:
    """A real redis-server (Debian's) on loopback, with a password, that the test stops and starts."""

    def __init__(self, workdir):
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                REDIS_PASSWORD,
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    import bootstrap  # tools/: on sys.path through tests/gateway/runner

    try:
        bootstrap.debian_packages(["redis-server"], purpose="the shared budget tests (a real Redis)")
    except bootstrap.ToolError as exc:  # fail, never skip
        pytest.fail(str(exc), pytrace=False)
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def gateway_with(gateway_factory, redis_address: str, name: str, fail_mode: str = "open", prefix: str = "t1:"):
    values = {
        "auth": {"enabled": True, "existingSecret": SECRET},
        "budgets": {
            "redis": {
                "address": redis_address,
                "keyPrefix": prefix,
                "timeoutMs": 300,
                "passwordSecret": {"name": "redis-pass", "key": "password"},
            },
            "failMode": fail_mode,
        },
    }
    secrets = {SECRET: {"api-keys.json": json.dumps(API_KEYS)}, "redis-pass": {"password": REDIS_PASSWORD}}
    return gateway_factory(values, secrets=secrets, name=name, headers=bearer("free"))


@pytest.fixture(scope="module")
def replicas(gateway_factory, redis):
    """Two gateway replicas (two nginx) sharing one Redis."""
    return (
        gateway_with(gateway_factory, redis.address, "replica-a"),
        gateway_with(gateway_factory, redis.address, "replica-b"),
    )


# --- token metrics --------------------------------------------------------------------------------


def test_tokens_are_counted_from_plain_answers_and_streams_with_usage(replicas, backends):
    gw = replicas[0]
    body = {"model": "alpha", "messages": [{"role": "user", "content": "count my tokens"}], "max_tokens": 5}
    before_in = gw.metric("gateway_tokens_total", model="alpha", api_key="free", type="input")
    before_out = gw.metric("gateway_tokens_total", model="alpha", api_key="free", type="output")
    plain = post(gw, "/v1/chat/completions", body, headers=bearer("free"))
    assert plain.status_code == 200, describe(plain, gw)
    usage = plain.json()["usage"]
    # A stream asking for usage: its last event carries it.
    stream = requests.post(
        gw.url + "/v1/chat/completions",
        headers=bearer("free"),
        stream=True,
        timeout=15,
        json={
            **body,
            "stream": True,
            "stream_options": {"include_usage": True},
            "mock": {"chunks": 5, "interval_ms": 20},
        },
    )
    events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith(b"data: {")]
    stream_usage = events[-1]["usage"]
    time.sleep(0.2)
    assert (
        gw.metric("gateway_tokens_total", model="alpha", api_key="free", type="input") - before_in
        == usage["prompt_tokens"] + stream_usage["prompt_tokens"]
    )
    assert (
        gw.metric("gateway_tokens_total", model="alpha", api_key="free", type="output") - before_out
        == usage["completion_tokens"] + stream_usage["completion_tokens"]
    )
    # The OpenTelemetry GenAI histograms.
    assert gw.metric("gen_ai_client_token_usage_count", gen_ai_request_model="alpha", gen_ai_token_type="input") >= 2
    assert gw.metric("gen_ai_server_time_to_first_token_seconds_count", gen_ai_request_model="alpha") >= 1
    assert gw.metric("gen_ai_server_time_per_output_token_seconds_count", gen_ai_request_model="alpha") >= 1


def test_a_stream_without_usage_is_counted_as_missing_never_as_zero_tokens(replicas):
    gw = replicas[0]
    before_missing = gw.metric("gateway_usage_missing_total", model="alpha", kind="stream")
    before_tokens = gw.metric("gateway_tokens_total", model="alpha")
    resp = requests.post(
        gw.url + "/v1/chat/completions",
        headers=bearer("free"),
        timeout=15,
        json={
            "model": "alpha",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "mock": {"chunks": 3, "interval_ms": 10},
        },
    )
    assert resp.status_code == 200 and b"[DONE]" in resp.content
    time.sleep(0.2)
    assert gw.metric("gateway_usage_missing_total", model="alpha", kind="stream") == before_missing + 1
    assert gw.metric("gateway_tokens_total", model="alpha") == before_tokens


# --- budgets shared by the replicas ------------------------------------------------------------------


def test_a_request_budget_holds_across_two_replicas(replicas):
    a, b = replicas
    statuses = []
    for i in range(14):
        gw = (a, b)[i % 2]
        resp = post(gw, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers=bearer("rpm"))
        statuses.append(resp.status_code)
        if resp.status_code == 200:
            assert resp.headers["x-ratelimit-limit-requests"] == "10"
    # 10 per minute for the key, not 10 per replica.
    assert statuses == [200] * 10 + [429] * 4, statuses
    err = error(
        post(a, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers=bearer("rpm")),
        429,
        a,
        code="rate_limit_exceeded",
    )
    assert "10 requests per minute" in err["message"]
    assert a.metric("gateway_budget_rejections_total", api_key="rpm", reason="requests") >= 1


def test_a_token_budget_is_charged_at_the_end_and_overshoots_by_at_most_one_request_per_replica(replicas, backends):
    a, b = replicas
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "x" * 400}],
        "max_tokens": 50,
        "mock": {"delay_ms": 300},
    }
    one = post(a, "/v1/chat/completions", {**body, "mock": {}}, headers=bearer("free")).json()["usage"]
    per_request = one["prompt_tokens"] + one["completion_tokens"]

    def send(i):
        resp = post((a, b)[i % 2], "/v1/chat/completions", body, headers=bearer("tpm"))
        return resp.status_code, resp.json().get("usage"), resp.headers.get("x-ratelimit-remaining-tokens")

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(40)))
    seconds = time.monotonic() - t0
    served = [u for s, u, _ in results if s == 200]
    used = sum(u["prompt_tokens"] + u["completion_tokens"] for u in served)
    assert served and any(s == 429 for s, _, _ in results), results
    # The budget (1500 a minute) is exceeded by at most one in-flight request per replica; the
    # sliding window frees 1500/60 tokens a second meanwhile.
    assert used <= 1500 * (1 + seconds / 60) + 2 * per_request, (used, per_request, len(served), seconds)
    codes = {
        json.loads(r.text)["error"]["code"]
        for r in [post(a, "/v1/chat/completions", body, headers=bearer("tpm"))]
        if r.status_code == 429
    }
    assert codes <= {"token_budget_exceeded"}, codes


def test_redis_going_away_follows_the_fail_mode_and_enforcement_resumes(gateway_factory, redis, replicas):
    closed = gateway_with(gateway_factory, redis.address, "replica-closed", fail_mode="closed", prefix="t2:")
    opened = replicas[0]
    body = {"model": "alpha", "input": "x"}
    before = opened.metric("gateway_budget_backend_errors_total")
    redis.stop()
    try:
        # Open: admitted, counted, logged. Closed: 503 naming the cause.
        assert post(opened, "/v1/embeddings", body, headers=bearer("tpm")).status_code == 200
        assert opened.metric("gateway_budget_backend_errors_total") > before
        assert "Redis does not answer" in opened.error_log(200)
        err = error(post(closed, "/v1/embeddings", body, headers=bearer("tpm")), 503, closed, code="budget_unavailable")
        assert "budget" in err["message"]
        # Keys without a budget never ask Redis.
        assert post(closed, "/v1/embeddings", body, headers=bearer("free")).status_code == 200
    finally:
        redis.start()
    ok = False
    for _ in range(50):
        if post(closed, "/v1/embeddings", body, headers=bearer("tpm")).status_code == 200:
            ok = True
            break
        time.sleep(0.1)
    assert ok, closed.context()
    # And the request budget is enforced again (Redis came back empty: a fresh minute for the key).
    statuses = [post(closed, "/v1/embeddings", body, headers=bearer("rpm")).status_code for _ in range(12)]
    assert statuses.count(429) >= 1 and statuses[:10] == [200] * 10, statuses

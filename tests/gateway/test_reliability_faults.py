"""Backend and process faults on the real nginx: what the client sees, what the backend sees.

Each test that counts backend events gets its own mock backend (fresh counters) behind its
own gateway (routing.endpoints points `alpha` at it); docs/reliability.md maps the cases.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from . import rawhttp
from .api import describe, error, get, post
from .backends import MockBackend, free_port
from .conftest import READ_TIMEOUT_SECONDS, ready_of


def chat(model="alpha", n=8, interval=20, stream=True, **mock) -> dict:
    return {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": dict(chunks=n, interval_ms=interval, **mock),
    }


def stream(gw, body, **kw) -> rawhttp.Response:
    return rawhttp.request("127.0.0.1", gw.port, "POST", "/v1/chat/completions", body, **kw)


def wait_until(pred, timeout: float, step: float = 0.02):
    """Poll pred() until it returns a truthy value; return (value, seconds waited)."""
    t0 = time.monotonic()
    while True:
        value = pred()
        if value or time.monotonic() - t0 > timeout:
            return value, time.monotonic() - t0
        time.sleep(step)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A fresh mock backend serving `alpha` (counters only this module touches)."""
    backend = MockBackend(
        "--model",
        "org/Alpha-7B",
        "--served-model-name",
        "alpha",
        "org/Alpha-7B",
        "alpha-latest",
        log_dir=tmp_path_factory.mktemp("own-mock"),
    )
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gw(gateway_factory, own):
    return gateway_factory({"routing": {"endpoints": {"alpha": own.address}}}, name="faults")


def requests_to(backend, path="/v1/chat/completions") -> int:
    return backend.stats()["requests"].get(path, 0)


# --- backend refuses / hangs / dies -----------------------------------------------------------


class TestBackendDownFromTheStart:
    """gamma refuses connections from the start (a Deployment scaled to zero): its health state is
    `unreachable`, so the gateway answers 503 + Retry-After itself, without trying to connect."""

    def test_plain_request_is_503_with_retry_after_fast_and_not_proxied(self, gateway):
        request_id = f"down-{time.monotonic_ns()}"
        t0 = time.monotonic()
        resp = post(gateway, "/v1/chat/completions", {"model": "gamma"}, headers={"X-Request-Id": request_id})
        error(resp, 503, gateway, code="model_not_ready")
        assert time.monotonic() - t0 < 1, "a model known to be down must be answered at once"
        assert resp.headers.get("Retry-After", "").isdigit(), describe(resp, gateway)
        assert resp.headers.get("X-Gateway-Model") == "gamma", describe(resp, gateway)
        entry = gateway.logged(request_id)
        assert (entry["status"], entry["model"], entry["upstream"]) == (503, "gamma", ""), entry

    def test_stream_request_is_503_json_not_an_event_stream(self, gateway):
        resp = stream(gateway, chat(model="gamma"))
        assert resp.status == 503, (resp.status, resp.body)
        assert resp.headers.get("retry-after", "").isdigit(), resp.headers
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        assert json.loads(resp.body)["error"]["code"] == "model_not_ready", resp.body
        assert not resp.events or "data:" not in resp.body.decode(), resp.body


@pytest.fixture(scope="module")
def dead_while_ready(gateway_factory, tmp_path_factory):
    """A gateway whose `beta` passed its first health check, then died. The checks run once an
    hour here, so only a request can find out."""
    backend = MockBackend(
        "--model",
        "/mnt/models/beta.gguf",
        "--alias",
        "beta",
        "--alias",
        "beta-small",
        log_dir=tmp_path_factory.mktemp("dead-while-ready"),
    )
    backend.start()
    try:
        gw = gateway_factory(
            {"routing": {"endpoints": {"beta": backend.address}}, "healthCheck": {"intervalSeconds": 3600}},
            name="dead-while-ready",
        )
        ok, _ = wait_until(lambda: ready_of(models_by_id(gw)[0]["beta"]) is True, 5, 0.05)
        assert ok, models_by_id(gw)
    finally:
        backend.stop()
    return gw


class TestBackendDiesWhileReady:
    """The model's only pod dies between two health checks: the request that finds it
    refusing connects marks it failed (skipped for healthCheck.failTimeoutSeconds), and with
    no other pod the answer is the same 503 as for a model that is not ready, at once."""

    def assert_was_ready(self, gw):
        # The health checks (interval 1 h here) never saw it die: only the request did.
        assert ready_of(models_by_id(gw)[0]["beta"]) is not None, "never checked: the test proves nothing"

    def test_plain_request_is_503_json_fast(self, dead_while_ready):
        gw = dead_while_ready
        self.assert_was_ready(gw)
        t0 = time.monotonic()
        resp = post(gw, "/v1/embeddings", {"model": "beta", "input": "x"})
        error(resp, 503, gw, code="model_not_ready")
        assert time.monotonic() - t0 < 2, "a refused connect must fail fast (connect timeout is 1 s here)"
        assert resp.headers.get("X-Gateway-Model") == "beta", describe(resp, gw)
        assert resp.headers.get("Retry-After", "").isdigit(), describe(resp, gw)
        # Skipped from now on: the next request does not even try it.
        assert ready_of(models_by_id(gw)[0]["beta"]) is False, models_by_id(gw)
        error(post(gw, "/v1/embeddings", {"model": "beta", "input": "x"}), 503, gw, code="model_not_ready")

    def test_stream_request_is_503_json_not_an_event_stream(self, dead_while_ready):
        gw = dead_while_ready
        resp = stream(gw, chat(model="beta"))
        assert resp.status == 503, (resp.status, resp.body)
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        assert json.loads(resp.body)["error"]["code"] == "model_not_ready", resp.body
        assert not resp.events or "data:" not in resp.body.decode(), resp.body


class TestBackendHangs:
    def test_before_the_headers_is_504_json_after_the_read_timeout(self, gw, own):
        t0 = time.monotonic()
        resp = stream(gw, chat(delay_ms=30000))
        took = time.monotonic() - t0
        assert resp.status == 504, (resp.status, resp.body, gw.context())
        assert json.loads(resp.body)["error"]["message"], resp.body
        assert READ_TIMEOUT_SECONDS - 0.2 <= took < READ_TIMEOUT_SECONDS + 3, took

    def test_mid_stream_the_stream_is_cut_after_the_read_timeout_without_done(self, gw, own):
        before = own.stats()
        t0 = time.monotonic()
        # Role chunk at once, then a 10 s silence: longer than timeouts.readSeconds (2 s here).
        resp = stream(gw, chat(n=2, interval=10000))
        took = time.monotonic() - t0
        assert resp.status == 200, (resp.status, gw.context())
        assert len(resp.events) == 1, resp.events
        assert "[DONE]" not in resp.data and not resp.complete, resp.events
        assert READ_TIMEOUT_SECONDS - 0.2 <= took < READ_TIMEOUT_SECONDS + 3, took
        # nginx closed the upstream connection when it gave up: the backend saw it.
        seen, _ = wait_until(lambda: own.stats()["disconnects"] > before["disconnects"], 12)
        assert seen, own.stats()


class TestBackendDiesMidStream:
    def test_stream_ends_without_done_and_without_retry(self, gw, own):
        before = requests_to(own)
        resp = stream(gw, chat(n=20, interval=5, die_after_chunks=5))
        assert resp.status == 200, (resp.status, gw.context())
        assert len(resp.events) == 5, resp.events
        assert "[DONE]" not in resp.data, "the gateway invented a [DONE]"
        assert not resp.complete, "a truncated stream must not end with the terminating chunk"
        time.sleep(0.3)
        assert requests_to(own) - before == 1, "the gateway retried a POST that had reached the backend"

    def test_non_stream_reset_before_answer_is_502_and_not_retried(self, gw, own):
        before = requests_to(own)
        error(post(gw, "/v1/chat/completions", {"model": "alpha", "mock": {"close": True}}), 502, gw)
        time.sleep(0.3)
        assert requests_to(own) - before == 1, "the gateway resent the request after a reset"

    def test_the_next_request_works(self, gw, own):
        resp = stream(gw, chat(n=3, interval=1))
        assert resp.status == 200 and resp.complete and resp.data[-1] == "[DONE]", resp.events


# --- client goes away ----------------------------------------------------------------------------


def test_client_disconnect_reaches_the_backend_within_a_second(gw, own):
    before = own.stats()
    resp = stream(gw, chat(n=2000, interval=10), close_after_events=5)
    closed_at = time.monotonic()
    assert len(resp.events) >= 5, resp.events
    seen, waited = wait_until(lambda: own.stats()["disconnects"] > before["disconnects"], 5)
    assert seen, f"the backend never saw the client go away: {own.stats()}"
    assert waited < 1.0, f"the backend saw the disconnect only after {waited:.2f} s"
    # It stopped generating: the chunk count stays flat afterwards.
    sent = own.stats()["chunks_sent"]
    time.sleep(0.5)
    assert own.stats()["chunks_sent"] == sent, "the backend kept streaming after the disconnect"
    total = sent - before["chunks_sent"]
    elapsed = time.monotonic() - closed_at
    assert total < 5 + 1 + (elapsed + 1.0) / 0.010, total
    assert own.stats()["in_flight"] <= 1, own.stats()  # the /mock/stats call itself


def test_client_disconnect_while_waiting_for_the_first_byte_reaches_the_backend(gw, own):
    before = own.stats()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        body = json.dumps(chat(delay_ms=20000)).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_until(lambda: own.stats()["in_flight"] > before["in_flight"], 3)
    seen, waited = wait_until(lambda: own.stats()["disconnects"] > before["disconnects"], 5)
    assert seen and waited < 1.0, (waited, own.stats())


# --- nginx -s reload with streams in flight -------------------------------------------------------


def run_streams(gw, n_streams: int, body: dict, results: list) -> list[threading.Thread]:
    def one(i):
        try:
            results[i] = stream(gw, body, timeout=60)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n_streams)]
    for t in threads:
        t.start()
    return threads


def nginx_workers(gw) -> set[int]:
    with open(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children") as fh:
        return {int(p) for p in fh.read().split()}


STREAMS = 50


def nginx_reload(gw, nginx_bin: str) -> None:
    """`nginx -s reload` against this gateway's pid file (it signals the master with SIGHUP)."""
    proc = subprocess.run(
        [nginx_bin, "-p", str(gw.root / "tmp") + "/", "-e", "/dev/stderr", "-c", str(gw.conf), "-s", "reload"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, f"nginx -s reload failed: {proc.stderr}{gw.context()}"


def test_reload_with_50_streams_in_flight_truncates_none(gateway_factory, own, nginx_bin):
    gw = gateway_factory(
        {"routing": {"endpoints": {"alpha": own.address}}, "nginx": {"workerShutdownTimeout": "20s"}}, name="reload50"
    )
    old_workers = nginx_workers(gw)
    before = own.stats()
    deltas, interval = 40, 75  # 3 s per stream, far below worker_shutdown_timeout
    results: list = [None] * STREAMS
    threads = run_streams(gw, STREAMS, chat(n=deltas, interval=interval), results)
    ok, _ = wait_until(lambda: own.stats()["streams_started"] - before["streams_started"] >= STREAMS, 10)
    assert ok, f"only {own.stats()['streams_started'] - before['streams_started']} streams started"
    nginx_reload(gw, nginx_bin)
    new, _ = wait_until(lambda: nginx_workers(gw) - old_workers, 10)
    assert new, "no new workers after the reload"
    # A request during the drain goes to the new workers and works.
    fresh = stream(gw, chat(n=2, interval=1))
    assert fresh.status == 200 and fresh.data[-1] == "[DONE]", fresh.events
    for t in threads:
        t.join(60)
    failures = []
    for i, r in enumerate(results):
        if isinstance(r, Exception) or r is None:
            failures.append(f"stream {i}: {r!r}")
        elif not (r.status == 200 and r.complete and len(r.events) == 1 + deltas + 1 + 1 and r.data[-1] == "[DONE]"):
            failures.append(f"stream {i}: status {r.status} complete {r.complete} events {len(r.events)}")
    assert not failures, (
        f"{len(failures)} of {STREAMS} streams truncated by the reload:\n" + "\n".join(failures[:10]) + gw.context()
    )
    assert gw.proc.poll() is None, gw.context()
    # The old workers exit once their streams are done.
    gone, _ = wait_until(lambda: not (nginx_workers(gw) & old_workers), 10)
    assert gone, f"old workers still running: {nginx_workers(gw) & old_workers}"


def test_reload_cuts_streams_only_after_worker_shutdown_timeout(gateway_factory, own):
    drain = 2
    gw = gateway_factory(
        {"routing": {"endpoints": {"alpha": own.address}}, "nginx": {"workerShutdownTimeout": f"{drain}s"}},
        name="reload-drain",
    )
    results: list = [None] * 5
    threads = run_streams(gw, 5, chat(n=200, interval=50), results)  # 10 s streams
    time.sleep(0.8)
    reloaded = time.monotonic()
    gw.proc.send_signal(signal.SIGHUP)
    for t in threads:
        t.join(30)
    for r in results:
        assert isinstance(r, rawhttp.Response), r
        assert r.status == 200 and r.events, r
        cut = r.events[-1][0] - reloaded
        assert drain - 0.5 <= cut <= drain + 3, f"stream cut {cut:.2f} s after the reload (drain {drain} s)"
        assert "[DONE]" not in r.data and not r.complete, "a stream cut by the drain must not look complete"


# --- one backend down: /v1/models stays fast and correct -----------------------------------------


@pytest.fixture()
def blackhole():
    """A port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def models_by_id(gw) -> tuple[dict, float]:
    t0 = time.monotonic()
    resp = get(gw, "/v1/models", timeout=5)
    took = time.monotonic() - t0
    assert resp.status_code == 200, describe(resp, gw)
    return {m["id"]: m for m in resp.json()["data"]}, took


def test_models_stays_fast_and_correct_with_a_hung_backend(gateway_factory, blackhole):
    gw = gateway_factory(
        {"routing": {"endpoints": {"gamma": blackhole}}, "healthCheck": {"timeoutSeconds": 1}}, name="hung"
    )
    times = []
    deadline = time.monotonic() + 3  # spans several health-check rounds that hang on gamma
    while time.monotonic() < deadline:
        entries, took = models_by_id(gw)
        times.append(took)
        assert set(entries) == {"alpha", "beta", "gamma", "delta"}, entries  # omega is disabled
        assert ready_of(entries["alpha"]) is True and ready_of(entries["beta"]) is True, entries
        assert ready_of(entries["gamma"]) is not True, entries["gamma"]
        time.sleep(0.05)
    times.sort()
    assert times[len(times) // 2] < 0.05 and times[-1] < 0.5, f"/v1/models latency (s): {times}"


def test_a_backend_that_dies_goes_not_ready_and_comes_back(gateway_factory, tmp_path):
    port = free_port()
    args = ("--model", "/mnt/models/beta.gguf", "--alias", "beta", "--alias", "beta-small", "--port", str(port))
    backend = MockBackend(*args, log_dir=tmp_path).start()
    try:
        gw = gateway_factory({"routing": {"endpoints": {"beta": backend.address}}}, name="dies")
        ok, _ = wait_until(lambda: ready_of(models_by_id(gw)[0]["beta"]) is True, 5, 0.1)
        assert ok, models_by_id(gw)
        backend.stop()
        # Requests fail fast (refused: 502 until the next health check, 503 after), never hang.
        t0 = time.monotonic()
        resp = post(gw, "/v1/embeddings", {"model": "beta", "input": "x"})
        assert resp.status_code in (502, 503) and time.monotonic() - t0 < 2, describe(resp, gw)
        gone, _ = wait_until(lambda: ready_of(models_by_id(gw)[0]["beta"]) is False, 5, 0.1)
        assert gone, models_by_id(gw)
        resp = post(gw, "/v1/embeddings", {"model": "beta", "input": "x"})
        error(resp, 503, gw, code="model_not_ready")
        assert resp.headers.get("Retry-After", "").isdigit(), describe(resp, gw)
        entries, took = models_by_id(gw)
        assert took < 0.2 and ready_of(entries["alpha"]) is True, (took, entries)
        # Other models are unaffected.
        assert post(gw, "/v1/embeddings", {"model": "alpha", "input": "x"}).status_code == 200
        backend = MockBackend(*args, log_dir=tmp_path).start()
        back, _ = wait_until(lambda: ready_of(models_by_id(gw)[0]["beta"]) is True, 5, 0.1)
        assert back, models_by_id(gw)
        assert post(gw, "/v1/embeddings", {"model": "beta", "input": "x"}).status_code == 200
    finally:
        backend.stop()

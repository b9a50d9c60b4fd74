"""Gateway hardening: exact paths, bounded memory, nothing learned by restricted keys, a checked keys
file, the headers clients expect (X-Request-Id, rate limits, CORS), no SDK resend of a generation that
ran, and a clear error for whatever else real clients (curl, the OpenAI SDK, browsers) send."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from . import rawhttp, runner
from .api import describe, error, get, post
from .backends import MockBackend
from .conftest import API_KEYS_SECRET

KEYS = {
    "all": "sk-test-all-models-3f8a1c9e0b7d",
    "beta": "sk-test-only-beta-5e2d8c1a9f4b",
    "limited": "sk-test-limited-7a3c5e9b1d2f",
    "beta-default": "sk-test-beta-default-0c4e6a8b",
}
API_KEYS = [
    {"name": "all", "key": KEYS["all"]},
    {"name": "beta", "key": KEYS["beta"], "models": ["beta"]},
    {"name": "limited", "key": KEYS["limited"], "models": ["*"], "requestsPerMinute": 50},
    {"name": "beta-default", "key": KEYS["beta-default"], "models": ["beta", "alpha"], "defaultModel": "beta"},
]


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def endpoints(gw) -> list[str]:
    """The routed endpoints, as the rendered gateway.json lists them (the one list)."""
    return json.loads((gw.root / "config" / "gateway.json").read_text())["endpoints"]


def raw(gw, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> rawhttp.Response:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{gw.port}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return rawhttp.request("127.0.0.1", gw.port, method, target, raw=data)


def gateway_error(resp: rawhttp.Response, statuses: tuple[int, ...]) -> dict:
    assert resp.status in statuses, (resp.status, resp.headers, resp.body[:300])
    assert "x-mock-backend" not in {k.lower() for k in resp.headers}, resp.headers
    err = json.loads(resp.body)["error"]
    assert err["message"], err
    return err


# --- 1. only exact routed paths reach a backend ------------------------------------------

CONTROL = ["%0A", "%0D", "%0D%0A", "%00", "%09", "%0B", "%1F", "%7F"]


def test_a_control_character_in_any_routed_path_gets_the_gateways_own_error(gateway, backends):
    paths = endpoints(gateway)
    assert "/v1/chat/completions" in paths and "/rerank" in paths, paths
    before = backends["alpha"].stats()["requests_total"]
    body = json.dumps({"model": "alpha", "input": "x", "messages": [{"role": "user", "content": "x"}]}).encode()
    for path in paths:
        for c in CONTROL:
            for target in (path + c, path[:3] + c + path[3:], path + c + "?x=1"):
                gateway_error(raw(gateway, "POST", target, body), (400, 404))
    # Nothing of it reached the model server (its only requests are the health checks).
    assert backends["alpha"].stats()["requests_total"] - before <= 3 * len(paths), backends["alpha"].stats()


def test_raw_control_bytes_in_the_request_line_are_refused(gateway):
    for target in ("/v1/chat/completions\x0b", "/v1/chat/completions\x7f", "/v1/chat\x01/completions"):
        gateway_error(raw(gateway, "POST", target, b'{"model":"alpha"}'), (400,))


def test_v1_models_id_with_a_control_character_is_not_found(gateway):
    for c in CONTROL:
        err = gateway_error(raw(gateway, "GET", f"/v1/models/alpha{c}"), (400, 404))
        assert err["code"] in ("unknown_endpoint", "model_not_found", "bad_request"), err
    assert get(gateway, "/v1/models/alpha").status_code == 200


# --- 2. memory stays bounded with bodies of the maximum size -------------------------------


class Sink:
    """A model server that reads each request whole and answers a small JSON, never keeping it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                if head.startswith(b"GET"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    continue
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                left = length - len(data)
                data = b""
                while left > 0:
                    chunk = conn.recv(min(left, 1 << 20))
                    if not chunk:
                        return
                    left -= len(chunk)
                self.received.append(length)
                body = b'{"object":"list","data":[]}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )

    def close(self):
        self.sock.close()


def nginx_memory(gw) -> tuple[int, int]:
    """(RSS, anonymous RSS) of nginx's master and workers, in bytes."""
    rss = anon = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0"))
        if int(entry.name) == gw.proc.pid or ppid == gw.proc.pid:
            rss += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
            anon += int(fields.get("RssAnon", "0 kB").split()[0]) * 1024
    return rss, anon


def test_concurrent_bodies_of_the_maximum_size_keep_nginx_far_below_its_memory_limit(nginx_bin, tmp_path):
    """With the chart's default values (body.maxSize 64m, bufferSize 1m, 2 workers, 256Mi limit),
    8 concurrent 64 MiB bodies whose "model" comes last (the OpenAI SDK writes "messages" first)."""
    sink = Sink()
    gw = runner.start(
        {"routing": {"endpoints": {"alpha": sink.address}}, "timeouts": {"readSeconds": 60}}, name="memory"
    )
    try:
        limit = 256 * 1024 * 1024
        size = 64 * 1024 * 1024 - 4096
        head = b'{"messages":[{"role":"user","content":"'
        tail = b'"}],"model":"alpha"}'
        path = tmp_path / "body.json"
        with open(path, "wb") as f:
            f.write(head)
            f.write(b"lorem ipsum \\n " * ((size - len(head) - len(tail)) // 15))
            f.write(b"x" * ((size - len(head) - len(tail)) % 15))
            f.write(tail)
        assert path.stat().st_size == size
        idle, idle_anon = nginx_memory(gw)
        peak = [0, 0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                rss, anon = nginx_memory(gw)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
                time.sleep(0.02)

        def upload():
            with open(path, "rb") as f:
                return requests.post(
                    gw.url + "/v1/embeddings", data=f, timeout=120, headers={"Content-Type": "application/json"}
                ).status_code

        sampler = threading.Thread(target=sample)
        sampler.start()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: upload(), range(8)))
        done.set()
        sampler.join()
        assert statuses == [200] * 8, (statuses, gw.context())
        assert sink.received == [size] * 8, sink.received
        mib = 1024 * 1024
        print(
            f"\nnginx memory: idle {idle / mib:.1f} MiB (anonymous {idle_anon / mib:.1f}), peak with 8 x 64 MiB "
            f"bodies {peak[0] / mib:.1f} MiB (anonymous {peak[1] / mib:.1f}); limit {limit / mib:.0f} MiB"
        )
        # Far below the limit: under a quarter of it, whatever the body size (was 268 MiB for 6).
        assert peak[0] < limit / 4, (peak, idle)
    finally:
        runner.cleanup(gw)
        sink.close()


# --- 3, 4. restricted keys learn nothing; the keys file is checked at start -----------------


@pytest.fixture(scope="module")
def auth_gw(gateway_factory):
    return gateway_factory(
        {
            "auth": {"enabled": True, "existingSecret": API_KEYS_SECRET},
            "cors": {"allowedOrigins": ["https://chat.example.com"]},
        },
        secrets={API_KEYS_SECRET: {"api-keys.json": json.dumps(API_KEYS)}},
        name="hardening-auth",
        headers=bearer("all"),
    )


def test_a_restricted_key_without_model_is_not_told_the_default_model(auth_gw):
    resp = post(auth_gw, "/v1/chat/completions", {"messages": []}, headers=bearer("beta"))
    err = error(resp, 400, auth_gw, code="model_required")
    assert "alpha" not in resp.text and "X-Gateway-Model" not in resp.headers, describe(resp, auth_gw)
    # A key with a default of its own goes there; a key that may use the gateway's default, there.
    resp = post(auth_gw, "/v1/embeddings", {"input": "x"}, headers=bearer("beta-default"))
    assert resp.status_code == 200 and resp.headers["X-Gateway-Model"] == "beta", describe(resp, auth_gw)
    resp = post(auth_gw, "/v1/embeddings", {"input": "x"}, headers=bearer("all"))
    assert resp.headers["X-Gateway-Model"] == "alpha", describe(resp, auth_gw)
    assert "GET /v1/models" in err["message"]


def test_a_404_suggests_only_a_model_the_key_may_use(auth_gw):
    err = error(
        post(auth_gw, "/v1/embeddings", {"model": "ALPHA", "input": "x"}, headers=bearer("all")),
        404,
        auth_gw,
        code="model_not_found",
    )
    assert 'did you mean "alpha"' in err["message"], err
    err = error(
        post(auth_gw, "/v1/embeddings", {"model": "ALPHA", "input": "x"}, headers=bearer("beta")),
        404,
        auth_gw,
        code="model_not_found",
    )
    assert 'alpha"' not in err["message"].replace('"ALPHA"', ""), err


@pytest.mark.parametrize(
    "entries, named, hidden",
    [
        (
            [{"name": "a", "key": "sk-0123456789abcdef"}, {"name": "b", "key": "sk-0123456789abcdef"}],
            ["#2 (b)", "#1 (a)", "same key"],
            "sk-0123456789abcdef",
        ),
        (
            [{"name": "a", "key": "sk-0123456789abcdef"}, {"name": "a", "key": "sk-fedcba9876543210"}],
            ["#2 (a)", "same name"],
            "sk-fedcba9876543210",
        ),
        ([{"name": "a", "key": ""}], ["#1 (a)", "at least 16"], None),
        ([{"name": "a", "key": "sk-0123 456789abcdef"}], ["#1 (a)", "whitespace"], "sk-0123 456789abcdef"),
        (
            [{"name": "a", "key": "sk-0123456789abcdef", "models": ["beta"], "defaultModel": "alpha"}],
            ["#1 (a)", "defaultModel alpha"],
            "sk-0123456789abcdef",
        ),
    ],
)
def test_a_bad_keys_file_stops_nginx_naming_the_entries_never_the_keys(nginx_bin, entries, named, hidden):
    with pytest.raises(runner.GatewayError) as failed:
        runner.start(
            {"auth": {"enabled": True, "existingSecret": "keys"}},
            secrets={"keys": {"api-keys.json": json.dumps(entries)}},
            name="badkeys",
            ready_timeout=5,
        )
    message = str(failed.value)
    for part in named:
        assert part in message, message
    if hidden:
        assert hidden not in message, message


# --- 5. the headers clients expect ------------------------------------------------------------


def test_every_answer_carries_x_request_id(gateway, backends):
    own = "req-1234.abc"
    resp = post(
        gateway,
        "/v1/chat/completions",
        {"model": "alpha", "messages": [], "mock": {"echo_headers": True}},
        headers={"X-Request-Id": own},
    )
    assert resp.headers["X-Request-Id"] == own, describe(resp, gateway)
    echoed = {k.lower(): v for k, v in resp.json()["mock_echo"]["headers"].items()}
    assert echoed["x-request-id"] == own, echoed
    generated = post(gateway, "/v1/chat/completions", {"model": "alpha", "messages": []}).headers["X-Request-Id"]
    assert len(generated) == 32 and generated != own
    # Not a sane token: replaced.
    assert (
        post(gateway, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers={"X-Request-Id": "x" * 300}).headers[
            "X-Request-Id"
        ]
        != "x" * 300
    )
    answers = [
        get(gateway, "/v1/models"),
        get(gateway, "/v1/models/alpha"),
        get(gateway, "/nope"),
        post(gateway, "/v1/chat/completions", data=b"{", headers={"Content-Type": "application/json"}),
        post(gateway, "/v1/embeddings", {"model": "delta", "input": "x"}),  # 503, still loading
        post(gateway, "/v1/embeddings", {"model": "nope", "input": "x"}),
        requests.get(gateway.url + "/healthz", timeout=5),
    ]
    for resp in answers:
        assert len(resp.headers.get("X-Request-Id", "")) >= 8, describe(resp, gateway)
    bad_request_line = raw(gateway, "POST", "/v1/chat completions")
    assert bad_request_line.status == 400 and bad_request_line.headers.get("x-request-id"), bad_request_line.headers


def test_rate_limit_headers_on_answers_for_keys_with_a_limit(auth_gw):
    seen = []
    for _ in range(3):
        resp = post(auth_gw, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers=bearer("limited"))
        assert resp.status_code == 200, describe(resp, auth_gw)
        assert resp.headers["x-ratelimit-limit-requests"] == "50"
        assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
        seen.append(int(resp.headers["x-ratelimit-remaining-requests"]))
    assert seen == sorted(seen, reverse=True) and seen[0] > seen[-1], seen
    resp = post(auth_gw, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers=bearer("all"))
    assert "x-ratelimit-limit-requests" not in resp.headers, resp.headers


def test_cors_preflight_is_answered_before_authentication(auth_gw):
    origin = "https://chat.example.com"
    for path in ("/v1/chat/completions", "/v1/models"):
        resp = requests.options(
            auth_gw.url + path,
            timeout=5,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert resp.status_code == 204, describe(resp, auth_gw)
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in resp.headers
    resp = post(
        auth_gw, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers={**bearer("all"), "Origin": origin}
    )
    assert resp.headers["Access-Control-Allow-Origin"] == origin and resp.headers["Vary"] == "Origin"
    assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"].lower()
    # Not an allowed origin: the preflight says why, and no answer allows it.
    resp = requests.options(
        auth_gw.url + "/v1/chat/completions",
        timeout=5,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    error(resp, 403, auth_gw, code="cors_origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_is_off_by_default(gateway):
    resp = requests.options(
        gateway.url + "/v1/chat/completions",
        timeout=5,
        headers={"Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST"},
    )
    err = error(resp, 403, gateway, code="cors_origin_not_allowed")
    assert "cors.allowedOrigins" in err["message"]
    resp = post(gateway, "/v1/embeddings", {"model": "alpha", "input": "x"}, headers={"Origin": "https://x.example"})
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers


def test_the_openai_sdk_does_not_send_a_timed_out_generation_again(gateway_factory, tmp_path):
    import openai

    backend = MockBackend("--model", "org/Slow", "--served-model-name", "alpha", log_dir=tmp_path).start()
    try:
        gw = gateway_factory(
            {"routing": {"endpoints": {"alpha": backend.address}}, "timeouts": {"readSeconds": 1}}, name="sdk-timeout"
        )
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=2, timeout=30)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(
                model="alpha", messages=[{"role": "user", "content": "hi"}], extra_body={"mock": {"delay_ms": 3000}}
            )
        assert failed.value.status_code == 504
        assert failed.value.response.headers.get("x-should-retry") == "false"
        time.sleep(3)  # the backend finishes the abandoned generation
        assert backend.stats()["requests"].get("/v1/chat/completions") == 1, backend.stats()
        # A model that is not ready yet is safe to retry: no such header, the SDK waits and retries.
        ok = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
        assert ok.choices and ok._request_id, ok
    finally:
        backend.stop()


def test_the_openai_sdk_streams_and_reads_the_request_id(gateway):
    import openai

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks and chunks[-1].usage is not None, chunks[-3:]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found" and missing.value.request_id


# --- 6. what else real clients send -----------------------------------------------------------


def test_curl_expect_100_continue_and_chunked_uploads_work(gateway):
    body = json.dumps({"model": "alpha", "input": "x" * 5000}).encode()
    resp = raw(gateway, "POST", "/v1/embeddings", body, headers={"Expect": "100-continue"})
    # nginx answers "100 Continue" first, then the model server's answer follows.
    assert resp.status == 100 and b"HTTP/1.1 200 OK" in resp.body, (resp.status, resp.body[:300])
    chunked = (
        (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n"
        ).encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    resp = rawhttp.request("127.0.0.1", gateway.port, "POST", "/v1/embeddings", raw=chunked)
    assert resp.status == 200, (resp.status, resp.body[:300])


def test_a_compressed_body_is_refused_by_name(gateway):
    data = gzip.compress(json.dumps({"model": "alpha", "input": "x"}).encode())
    resp = post(
        gateway, "/v1/embeddings", data=data, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    err = error(resp, 415, gateway, code="unsupported_content_encoding")
    assert "gzip" in err["message"]


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf" + json.dumps({"model": "alpha", "input": "x"}).encode(), "byte order mark"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "alpha", "input": "x",}', "not valid JSON"),
    ],
)
def test_bodies_that_are_not_a_json_object_say_what_is_wrong(gateway, data, words):
    resp = post(gateway, "/v1/embeddings", data=data, headers={"Content-Type": "application/json"})
    err = error(resp, 400, gateway, code="invalid_json")
    assert words in err["message"], err


def test_a_wrong_content_type_is_named(gateway):
    resp = post(gateway, "/v1/embeddings", data=b'{"model":"alpha"}', headers={"Content-Type": "text/plain"})
    err = error(resp, 400, gateway, code="invalid_content_type")
    assert "text/plain" in err["message"], err


def test_a_trailing_slash_is_pointed_out(gateway):
    err = error(post(gateway, "/v1/chat/completions/", {"model": "alpha"}), 404, gateway, code="unknown_endpoint")
    assert "remove the trailing slash" in err["message"], err
    err = error(get(gateway, "/v1/models/"), 404, gateway, code="unknown_endpoint")
    assert "trailing slash" in err["message"], err


def test_get_on_a_routed_endpoint_is_405_with_allow(gateway):
    resp = get(gateway, "/v1/chat/completions")
    error(resp, 405, gateway, code="method_not_allowed")
    assert resp.headers["Allow"] == "POST"


def test_double_slashes_from_a_base_url_with_a_trailing_slash_still_route(gateway):
    resp = raw(gateway, "POST", "//v1//embeddings", json.dumps({"model": "alpha", "input": "x"}).encode())
    assert resp.status == 200, (resp.status, resp.body[:300])


# --- what real model servers do -----------------------------------------------------------------


def test_llama_server_streams_never_meet_a_connection_it_closed(gateway, backends):
    """llama-server closes its connection after every stream, though its headers promise keep-alive
    (the mock does the same as llama-server). Reusing such a connection at once sends the next
    request into a closed socket: a 502 nginx may not retry (the request was sent). The gateway asks
    for Connection: close on streams to llama-server routes, so none is reused."""
    before = backends["beta"].stats()
    session = requests.Session()
    for i in range(20):
        resp = session.post(
            gateway.url + "/v1/chat/completions",
            timeout=15,
            stream=i % 2 == 0,
            json={
                "model": "beta",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": i % 2 == 0,
                "mock": {"chunks": 2, "interval_ms": 1},
            },
        )
        assert resp.status_code == 200, describe(resp, gateway)
        assert resp.content is not None  # read it all
    after = backends["beta"].stats()
    assert after["streams_completed"] - before["streams_completed"] == 10, after
    # It never had to close a connection the gateway meant to reuse.
    assert after.get("closed_after_stream", 0) == before.get("closed_after_stream", 0), after

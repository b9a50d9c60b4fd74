"""Hostile input on the real nginx: bodies, framing (raw sockets), paths, headers, keys.

A client's mistake gets a 4xx in the OpenAI envelope made by the gateway (never a 5xx, never
a backend answer), framing that could smuggle a second request is refused, a header never
overrides the body's model, and no API key reaches a log. The property test (hypothesis)
drives the same rules over generated bodies. A known gateway bug would be a strict xfail whose
reason starts with BUG (docs/reliability.md lists what these tests found).
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import rawhttp
from .api import describe, error, post
from .conftest import API_KEYS_SECRET
from .test_auth import API_KEYS, KEYS

HOST = "127.0.0.1"


def raw(gw, data: bytes, timeout: float = 10.0) -> rawhttp.Response:
    return rawhttp.request(HOST, gw.port, "", "", raw=data, timeout=timeout)


def head(path="/v1/embeddings", method="POST", extra: str = "", host="gw") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"


def with_body(extra: str, body: bytes, path="/v1/embeddings") -> bytes:
    return (head(path, extra=extra) + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def gateway_error(resp: rawhttp.Response, statuses, gw) -> dict:
    """A JSON error envelope the gateway made (not a backend), with one of these statuses."""
    statuses = (statuses,) if isinstance(statuses, int) else statuses
    ctx = f"{resp.status} {resp.headers} {resp.body[:300]!r}{gw.context()}"
    assert resp.status in statuses, ctx
    assert "x-mock-backend" not in resp.headers, f"a backend answered: {ctx}"
    assert resp.headers.get("content-type", "").startswith("application/json"), ctx
    err = json.loads(resp.body)["error"]
    assert {"message", "type", "param", "code"} <= set(err) and err["message"], ctx
    return err


@pytest.fixture()
def untouched(backends):
    """Asserts, after the test, that no inference request reached any backend."""

    def count():
        return {
            n: {k: v for k, v in b.stats()["requests"].items() if k.startswith("/v1/") and k != "/v1/models"}
            for n, b in backends.items()
        }

    before = count()
    yield
    assert count() == before, f"a hostile request reached a backend: {before} -> {count()}"


EMB = "/v1/embeddings"


# --- bodies ------------------------------------------------------------------------------------


class TestBodies:
    @pytest.mark.parametrize(
        "body",
        [
            b"{",
            b'{"model": "beta"',
            b'{"model": "beta",}',
            b'{"model": beta}',
            b"{'model': 'beta'}",
            b'{"model": "beta"} trailing',
            b'{"model": "be\\qta"}',
            b'{"model": "beta", "input": [1, 2,',
            b"\xff\xfe{}",
            b"",
            b"null",
            b"[]",
            b'"model"',
            b"42",
            b'{"model": "beta"}{"model": "alpha"}',
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 300 + b"1" + b"}" * 300,
        ],
        ids=lambda b: repr(b[:24]),
    )
    def test_malformed_or_truncated_json_is_400(self, gateway, untouched, body):
        err = gateway_error(raw(gateway, with_body("", body)), 400, gateway)
        assert err["type"] == "invalid_request_error", err

    def test_body_shorter_than_its_content_length_is_never_forwarded(self, gateway, untouched):
        body = b'{"model": "beta", "input": "x"}'
        data = (head() + f"Content-Length: {len(body) + 50}\r\nConnection: close\r\n\r\n").encode() + body
        # nginx waits client_body_timeout (60 s) for the rest and routes nothing meanwhile.
        with pytest.raises(OSError):
            rawhttp.request(HOST, gateway.port, "", "", raw=data, timeout=1.5)

    @pytest.mark.parametrize(
        "ctype",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; b=x",
            "application/jsonx",
            "text/json",
            "application/xml",
            "json",
        ],
    )
    def test_non_json_content_type_is_400(self, gateway, untouched, ctype):
        body = b'{"model": "beta", "input": "x"}'
        data = (
            f"POST {EMB} HTTP/1.1\r\nHost: gw\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n"
        ).encode() + body
        err = gateway_error(raw(gateway, data), 400, gateway)
        assert "Content-Type" in err["message"], err

    @pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/json ;x=1"])
    def test_json_content_types_pass(self, gateway, backends, ctype):
        body = b'{"model": "beta", "input": "x"}'
        data = (
            f"POST {EMB} HTTP/1.1\r\nHost: gw\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n"
        ).encode() + body
        resp = raw(gateway, data)
        assert resp.status == 200 and resp.headers["x-mock-backend"] == backends["beta"].backend_id, resp.body

    @pytest.mark.parametrize(
        "body",
        [
            b'{"model": "alpha", "model": "beta", "input": "x"}',
            b'{"model": "beta", "input": "x", "model": "alpha"}',
            b'{"model": "beta", "mod\\u0065l": "alpha", "input": "x"}',  # the same key, escaped
            b'{"mod\\u0065l": "alpha", "model": "beta", "input": "x"}',
        ],
        ids=["plain", "later", "escaped-second", "escaped-first"],
    )
    def test_duplicate_model_keys_are_refused_never_split(self, gateway, untouched, body):
        # Python's json (vLLM) keeps the last "model"; routing on another one would send a
        # request to a backend that serves a different model than the key was checked for.
        err = gateway_error(raw(gateway, with_body("", body)), 400, gateway)
        assert err["param"] == "model", err

    def test_nested_model_keys_do_not_route(self, gateway, backends):
        body = b'{"input": "x", "extra": {"model": "beta"}, "model": "alpha"}'
        resp = raw(gateway, with_body("", body))
        assert resp.status == 200 and resp.headers["x-gateway-model"] == "alpha", resp.headers
        assert resp.headers["x-mock-backend"] == backends["alpha"].backend_id

    @pytest.mark.parametrize("model", [1, 1.5, True, None, [], ["beta"], {"name": "beta"}, ""], ids=lambda m: repr(m))
    def test_model_of_the_wrong_type_is_400(self, gateway, untouched, model):
        err = gateway_error(
            raw(gateway, with_body("", json.dumps({"model": model, "input": "x"}).encode())), 400, gateway
        )
        assert err["param"] == "model", err

    @pytest.mark.parametrize("size", [257, 4096, 1 << 20])
    def test_huge_model_strings_are_400_fast(self, gateway, untouched, size):
        t0 = time.monotonic()
        err = gateway_error(raw(gateway, with_body("", json.dumps({"model": "m" * size}).encode())), 400, gateway)
        assert time.monotonic() - t0 < 2 and err["param"] == "model", err

    def test_model_at_the_length_limit_is_a_404_not_a_crash(self, gateway, untouched):
        err = gateway_error(raw(gateway, with_body("", json.dumps({"model": "m" * 256}).encode())), 404, gateway)
        assert err["code"] == "model_not_found", err

    @pytest.mark.parametrize(
        "model",
        ["beta\u0000", "beta ", " beta", "BETA", "beta\n", "bet\u0430"],
        ids=["nul", "trailing-space", "leading-space", "case", "newline", "cyrillic-a"],
    )
    def test_near_miss_model_names_are_404(self, gateway, untouched, model):
        err = gateway_error(raw(gateway, with_body("", json.dumps({"model": model}).encode())), 404, gateway)
        assert err["code"] == "model_not_found", err

    def test_body_over_the_limit_is_413_json_from_content_length(self, gateway, untouched):
        data = (head() + f"Content-Length: {9 * 1024 * 1024}\r\nConnection: close\r\n\r\n").encode()
        t0 = time.monotonic()
        gateway_error(raw(gateway, data + b'{"model": "beta", "input": "'), 413, gateway)
        assert time.monotonic() - t0 < 2, "a too large Content-Length must be refused before reading"

    def test_chunked_body_over_the_limit_is_413_json(self, gateway, untouched):
        chunk = b"x" * (1 << 20)
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(9)) + b"0\r\n\r\n"
        data = (head(extra="Transfer-Encoding: chunked\r\nConnection: close\r\n") + "\r\n").encode() + body
        gateway_error(raw(gateway, data), 413, gateway)

    def test_body_just_under_the_limit_routes(self, gateway, backends):
        # Spills to a temp file (above body.bufferSize): Lua must read the file.
        body = json.dumps({"model": "beta", "input": "x" * (8 * 1024 * 1024 - 200)}).encode()
        resp = raw(gateway, with_body("", body), timeout=30)
        assert resp.status == 200 and resp.headers["x-mock-backend"] == backends["beta"].backend_id, resp.status


# --- framing (raw sockets: what could smuggle a second request) ----------------------------------

BODY = b'{"model": "beta", "input": "x"}'
SMUGGLED = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n"
    + b'{"model": "alpha", "input": "y"}'[:31]
)


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class TestFraming:
    @pytest.mark.parametrize(
        "extra",
        [
            f"Content-Length: {len(BODY)}\r\nContent-Length: {len(BODY)}\r\n",
            f"Content-Length: {len(BODY)}\r\nContent-Length: 5\r\n",
            f"Content-Length: {len(BODY)}, {len(BODY)}\r\n",
            f"Content-Length: +{len(BODY)}\r\n",
            "Content-Length: -1\r\n",
            f"Content-Length: 0x{len(BODY):x}\r\n",
        ],
        ids=["dup-same", "dup-different", "list", "plus", "negative", "hex"],
    )
    def test_bad_content_length_is_400_and_nothing_is_forwarded(self, gateway, untouched, extra):
        data = (head(extra=extra) + "Connection: keep-alive\r\n\r\n").encode() + BODY + SMUGGLED
        gateway_error(raw(gateway, data), 400, gateway)

    @pytest.mark.parametrize("order", ["cl-first", "te-first"])
    def test_content_length_with_transfer_encoding_is_400(self, gateway, untouched, order):
        cl, te = "Content-Length: 4\r\n", "Transfer-Encoding: chunked\r\n"
        extra = cl + te if order == "cl-first" else te + cl
        data = (head(extra=extra) + "Connection: keep-alive\r\n\r\n").encode() + chunked(BODY) + SMUGGLED
        resp = raw(gateway, data)
        gateway_error(resp, 400, gateway)
        assert resp.headers.get("connection", "").lower() != "keep-alive", "the connection must not be reused"

    @pytest.mark.parametrize(
        "te",
        [
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding : chunked\r\n",
            "Transfer-Encoding:\r\n chunked\r\n",
        ],
        ids=["duplicate", "space-before-colon", "obs-fold"],
    )
    def test_malformed_transfer_encoding_is_400(self, gateway, untouched, te):
        data = (head(extra=te) + "Connection: keep-alive\r\n\r\n").encode() + chunked(BODY) + SMUGGLED
        gateway_error(raw(gateway, data), 400, gateway)

    # Found by these tests (nginx answered 501 as an HTML page); fixed in nginx.conf's error_page.
    @pytest.mark.parametrize(
        "te", ["chunkedx", "chunked, identity", "\tchunked"], ids=["chunkedx", "chunked-identity", "tab"]
    )
    def test_unknown_transfer_encoding_is_refused_as_json(self, gateway, untouched, te):
        data = (
            (head(extra=f"Transfer-Encoding: {te}\r\n") + "Connection: keep-alive\r\n\r\n").encode()
            + chunked(BODY)
            + SMUGGLED
        )
        gateway_error(raw(gateway, data), (400, 501), gateway)

    @pytest.mark.parametrize("te", ["chunkedx", "chunked, identity", "\tchunked"], ids=["chunkedx", "list", "tab"])
    def test_unknown_transfer_encoding_is_never_forwarded(self, gateway, untouched, te):
        data = (
            (head(extra=f"Transfer-Encoding: {te}\r\n") + "Connection: keep-alive\r\n\r\n").encode()
            + chunked(BODY)
            + SMUGGLED
        )
        resp = raw(gateway, data)
        assert resp.status in (400, 501), (resp.status, resp.body[:200])

    def test_pipelined_requests_route_each_on_its_own_body(self, gateway, backends):
        one = json.dumps({"model": "beta", "input": "x"}).encode()
        two = json.dumps({"model": "alpha", "input": "y"}).encode()
        data = b"".join((head(extra=f"Content-Length: {len(b)}\r\n") + "\r\n").encode() + b for b in (one, two))
        data += (head(extra="Content-Length: 0\r\nConnection: close\r\n") + "\r\n").encode()
        with socket.create_connection((HOST, gateway.port), timeout=10) as sock:
            sock.sendall(data)
            buf = b""
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                buf += got
        answers = [a for a in buf.split(b"HTTP/1.1 ")[1:]]
        assert len(answers) == 3, buf[:2000]
        assert (
            backends["beta"].backend_id.encode() in answers[0] and backends["alpha"].backend_id.encode() in answers[1]
        ), buf[:2000]
        assert answers[2].startswith(b"400"), answers[2][:300]  # an empty body is not a JSON object


# --- headers and paths -----------------------------------------------------------------------------


class TestHeadersAndPaths:
    def test_oversized_header_is_400_json(self, gateway, untouched):
        gateway_error(raw(gateway, with_body("X-Big: " + "a" * 20000 + "\r\n", BODY)), (400, 431), gateway)

    def test_too_many_headers_is_400_json(self, gateway, untouched):
        extra = "".join(f"X-H{i}: {'b' * 100}\r\n" for i in range(2000))
        gateway_error(raw(gateway, with_body(extra, BODY)), (400, 431), gateway)

    def test_two_host_headers_are_400(self, gateway, untouched):
        data = (
            f"POST {EMB} HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
        ).encode() + BODY
        gateway_error(raw(gateway, data), 400, gateway)

    # Found by these tests (500 HTML: "empty URI in redirect to named location"); fixed in nginx.conf.
    @pytest.mark.parametrize(
        "path",
        [f"{EMB}?{'a' * 20000}", f"{EMB}%00", "/%2e%2e/%2e%2e/etc/passwd", "/v1/../../../_gateway/health/x"],
        ids=["uri-too-long", "nul", "encoded-dotdot-above-root", "dotdot-above-root"],
    )
    def test_bad_request_lines_are_4xx_json(self, gateway, untouched, path):
        data = f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        gateway_error(raw(gateway, data), (400, 414), gateway)

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/../v1/chat/completions",
            "/v1/%2e%2e/v1/chat/completions",
            "/v1/chat%2Fcompletions",
            "//v1/chat/completions",
            "/v1/chat/completions/",
            "/v1/chat/completions/..",
            "/v1/./chat/completions",
            "/v1/chat/completions%2f..%2f..%2fmodels",
            "/v1/../_gateway/health/x",
            "/_gateway/health/alpha",
            "/metrics",
            "/v1/chat/completions;x=1",
            "/V1/CHAT/COMPLETIONS",
        ],
    )
    def test_path_tricks_route_normalized_or_get_a_json_4xx(self, gateway, backends, path):
        body = json.dumps({"model": "beta", "input": "x", "messages": [], "mock": {"echo_headers": True}}).encode()
        resp = raw(gateway, with_body("", body, path=path))
        assert resp.status < 500, (path, resp.status, resp.body[:300])
        if resp.status == 200:
            echo = resp.json()["mock_echo"]
            assert resp.headers["x-mock-backend"] == backends["beta"].backend_id, resp.headers
            assert echo["path"] in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"), echo
            assert ".." not in echo["path"] and "%" not in echo["path"], echo
        else:
            gateway_error(resp, (400, 404, 405), gateway)

    @pytest.mark.parametrize("header", ["X-Gateway-Model", "X-Model", "Model", "OpenAI-Model", "X-Route-To"])
    def test_a_client_header_never_overrides_the_body_model(self, gateway, backends, header):
        body = json.dumps({"model": "beta", "input": "x", "mock": {"echo_headers": True}}).encode()
        resp = raw(gateway, with_body(f"{header}: alpha\r\n", body))
        assert resp.status == 200, (resp.status, resp.body[:300])
        assert resp.headers["x-mock-backend"] == backends["beta"].backend_id, resp.headers
        assert resp.headers["x-gateway-model"] == "beta", resp.headers
        forwarded = resp.json()["mock_echo"]["headers"]
        assert forwarded.get("x-gateway-model") == "beta", forwarded

    def test_query_string_model_does_not_route(self, gateway, backends):
        resp = raw(
            gateway, with_body("", json.dumps({"model": "beta", "input": "x"}).encode(), path=f"{EMB}?model=alpha")
        )
        assert resp.status == 200 and resp.headers["x-mock-backend"] == backends["beta"].backend_id

    @pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:1", "localhost:9145", "gw\x00x", "a" * 300])
    def test_odd_host_headers_do_not_change_routing(self, gateway, backends, host):
        data = (head(host=host) + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n").encode() + BODY
        resp = raw(gateway, data)
        assert resp.status < 500, (resp.status, resp.body[:200])
        if resp.status == 200:
            assert resp.headers["x-mock-backend"] == backends["beta"].backend_id


# --- API keys in the wrong place, near misses, logs ------------------------------------------------


@pytest.fixture(scope="module")
def auth_gw(gateway_factory):
    """test_auth.py's keys on a gateway of its own (its logs hold only this module's requests)."""
    return gateway_factory(
        {"auth": {"enabled": True, "existingSecret": API_KEYS_SECRET}, "healthCheck": {"timeoutSeconds": 1}},
        secrets={API_KEYS_SECRET: {"api-keys.json": json.dumps(API_KEYS)}},
        name="auth-hostile",
        headers={"Authorization": f"Bearer {KEYS['team-a']}"},
    )


KEY = KEYS["team-a"]


class TestKeys:
    @pytest.mark.parametrize(
        "where", ["query", "body", "cookie", "x-api-key-bearer", "authorization-token", "proxy-authorization", "path"]
    )
    def test_a_key_in_the_wrong_place_is_401(self, auth_gw, where):
        path, body, headers = "/v1/chat/completions", {"model": "alpha"}, {}
        if where == "query":
            path += f"?api_key={KEY}"
        elif where == "body":
            body["api_key"] = KEY
        elif where == "cookie":
            headers["Cookie"] = f"api_key={KEY}"
        elif where == "x-api-key-bearer":
            headers["x-api-key"] = f"Bearer {KEY}"
        elif where == "authorization-token":
            headers["Authorization"] = f"Token {KEY}"
        elif where == "proxy-authorization":
            headers["Proxy-Authorization"] = f"Bearer {KEY}"
        elif where == "path":
            # Paths are logged as sent (docs/reliability.md): another key, so the log test below stays exact.
            path = f"/v1/chat/completions/{KEYS['team-slow']}"
        resp = post(auth_gw, path, body, headers=headers)
        # 400 credential_in_query, 401, or 404 for a path that is no endpoint: never routed.
        assert resp.status_code in (400, 401, 404), describe(resp, auth_gw)
        error(resp, resp.status_code, auth_gw)

    @pytest.mark.parametrize(
        "value",
        [
            f"Bearer {KEY}\x00",
            f"Bearer {KEY} extra",
            f"Bearer {KEY[:-1]}",
            f"Bearer {KEY[1:]}",
            f"Bearer {KEY[:8]}",
            f"Bearer {KEY.replace('a', 'A', 1)}",
            "Bearer " + "sk-" + "0" * 29,
            "Bearer " + "x" * 8000,
        ],
        ids=["nul", "extra-token", "short", "no-first-char", "prefix-only", "case", "zeros", "huge"],
    )
    def test_near_miss_keys_are_401(self, auth_gw, value):
        data = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: {value}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
            '{"model":"alpha"}'
        ).encode("latin-1")
        gateway_error(raw(auth_gw, data), (400, 401), auth_gw)

    def test_two_authorization_headers_do_not_authenticate_on_the_second(self, auth_gw):
        data = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-wrong\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
            "Connection: close\r\n\r\n"
            '{"model":"alpha"}'
        ).encode()
        resp = raw(auth_gw, data)
        assert resp.status in (400, 401), (resp.status, resp.body[:200])

    def test_keys_in_wrong_places_and_near_misses_never_reach_the_logs(self, auth_gw):
        near = KEY[:-1] + "Z"
        post(
            auth_gw,
            "/v1/chat/completions",
            {"model": "alpha", "api_key": KEY},
            headers={"x-api-key": near, "X-Request-Id": "wrong-places-1"},
        )
        post(
            auth_gw,
            "/v1/chat/completions",
            {"model": "alpha"},
            headers={"Authorization": f"Bearer {near}", "Cookie": f"k={KEY}", "X-Request-Id": "wrong-places-2"},
        )
        # An upstream reset: nginx writes an error log line with the request in it.
        post(
            auth_gw,
            "/v1/chat/completions",
            {"model": "alpha", "mock": {"close": True}},
            headers={"Authorization": f"Bearer {KEY}", "X-Request-Id": "wrong-places-3"},
        )
        for request_id in ("wrong-places-1", "wrong-places-2", "wrong-places-3"):
            auth_gw.logged(request_id)  # written (the access log is buffered), so searched below
        logs = auth_gw.raw_access_log() + auth_gw.stderr.read_text(errors="replace")
        for secret in (KEY, near, KEY[3:-3]):
            assert secret not in logs, f"a key (or near miss) is in the logs: {secret[:6]}..."

    @pytest.mark.parametrize("param", ["api_key", "key", "token", "access_token"])
    def test_a_key_in_the_query_string_never_reaches_the_logs_nor_the_backend(self, auth_gw, backends, param):
        # nginx writes the request line, query included, into error log lines (e.g. an upstream
        # that resets), and $is_args$args would forward it upstream.
        before = backends["alpha"].stats()["requests"].get("/v1/chat/completions", 0)
        for i, body in enumerate(({"model": "alpha", "mock": {"close": True}}, {"model": "alpha"})):
            headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": f"query-{param}-{i}"}
            post(auth_gw, f"/v1/chat/completions?{param}={KEY}", body, headers=headers)
            auth_gw.logged(f"query-{param}-{i}")  # written (the access log is buffered), so searched below
        logs = auth_gw.raw_access_log() + auth_gw.stderr.read_text(errors="replace")
        assert KEY not in logs, "the key from the query string is in the logs"
        assert KEY not in json.dumps(backends["alpha"].stats()["last_request_headers"])
        assert backends["alpha"].stats()["requests"].get("/v1/chat/completions", 0) == before, (
            "a request with a credential in its URL was forwarded"
        )


# --- property: generated bodies --------------------------------------------------------------------

TEAM_B = KEYS["team-b"]  # may use beta (by its alias beta-small) only
NAMES = [
    "alpha",
    "beta",
    "beta-small",
    "gamma",
    "delta",
    "omega",
    "org/Alpha-7B",
    "alpha-latest",
    "Beta",
    "",
    "beta\u0000",
    "beta-small ",
    "../beta",
]
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
model_values = st.sampled_from(NAMES) | st.text(max_size=30) | json_values
extra_keys = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in ("model", "mock", "stream")), json_values, max_size=5
)


@st.composite
def bodies(draw) -> bytes:
    """Mostly JSON objects with 0-2 "model" keys among other keys, sometimes damaged."""
    items = list(draw(extra_keys).items())
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        items.insert(draw(st.integers(0, len(items))), ("model", draw(model_values)))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in items) + "}"
    data = text.encode()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "garbage", "bytes"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "garbage":
        data += draw(st.binary(min_size=1, max_size=8))
    elif damage == "bytes":
        data = draw(st.binary(max_size=64))
    return data


def python_model(data: bytes):
    """What a Python backend (vLLM) reads as the model: json.loads keeps the last duplicate."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj.get("model") if isinstance(obj, dict) else None


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies(), path=st.sampled_from(["/v1/embeddings", "/v1/chat/completions", "/v1/completions"]))
def test_generated_bodies_never_get_a_5xx_nor_an_unallowed_model(auth_gw, backends, body, path):
    data = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEAM_B}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    resp = raw(auth_gw, data)
    ctx = f"{body!r} -> {resp.status} {resp.headers} {resp.body[:300]!r}"
    assert resp.status < 500, f"a client's mistake got a 5xx: {ctx}"
    if resp.status == 200:
        # Routed: only to beta (the one model team-b may use), and the backend read that model too.
        assert resp.headers.get("x-gateway-model") == "beta", ctx
        assert resp.headers.get("x-mock-backend") == backends["beta"].backend_id, ctx
        assert python_model(body) in ("beta", "beta-small"), ctx
    else:
        assert "x-mock-backend" not in resp.headers or resp.headers.get("x-gateway-model") == "beta", ctx
        if "x-mock-backend" not in resp.headers:
            gateway_error(resp, resp.status, auth_gw)

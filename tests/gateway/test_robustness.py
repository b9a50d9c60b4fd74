"""Requests that trip gateways in the field: odd paths and framing, duplicate keys, reloads mid-stream."""

from __future__ import annotations

import json
import signal
import time

import pytest

from . import rawhttp
from .test_streaming import paced


def send_raw(gw, raw: bytes) -> rawhttp.Response:
    return rawhttp.request("127.0.0.1", gw.port, "", "", raw=raw)


def post_raw(path: str, body: bytes, extra: str = "", content_length: bool = True) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}"
    if content_length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


ECHO = json.dumps({"model": "beta", "mock": {"echo_headers": True}}).encode()


@pytest.mark.parametrize(
    "path",
    [
        "/v1//chat/completions",
        "/v1/../v1/chat/completions",
        "/v1/%2e%2e/v1/chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1/chat/completions?x=1",
    ],
)
def test_path_variants_reach_the_backend_normalized_or_are_refused(gateway, backends, path):
    resp = send_raw(gateway, post_raw(path, ECHO))
    assert resp.status in (200, 400, 404), (resp.status, resp.body, gateway.context())
    if resp.status == 200:
        echo = resp.json()["mock_echo"]
        assert resp.headers["x-mock-backend"] == backends["beta"].backend_id
        assert echo["path"] == "/v1/chat/completions", echo
    else:
        assert "error" in resp.json() and "x-mock-backend" not in resp.headers, resp.body


def test_chunked_request_body_routes(gateway, backends):
    body = json.dumps({"model": "beta", "input": "x", "mock": {"echo_headers": True}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    resp = send_raw(
        gateway, post_raw("/v1/embeddings", chunked, "Transfer-Encoding: chunked\r\n", content_length=False)
    )
    assert resp.status == 200, (resp.status, resp.body, gateway.context())
    assert resp.headers["x-mock-backend"] == backends["beta"].backend_id
    assert resp.json()["mock_echo"]["body_bytes"] == len(body)


def test_content_length_with_transfer_encoding_is_refused_as_json(gateway):
    body = json.dumps({"model": "beta"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    resp = send_raw(
        gateway,
        post_raw(
            "/v1/embeddings",
            chunked,
            f"Transfer-Encoding: chunked\r\nContent-Length: {len(chunked)}\r\n",
            content_length=False,
        ),
    )
    assert resp.status == 400, (resp.status, resp.body)
    assert "error" in resp.json(), resp.body


def test_duplicate_model_keys_route_where_the_backend_reads(gateway, backends):
    # Python's json (vLLM) and cjson both keep the last duplicate: route and backend must agree.
    body = b'{"model": "alpha", "input": "x", "mock": {"echo_headers": true}, "model": "beta"}'
    resp = send_raw(gateway, post_raw("/v1/embeddings", body))
    assert resp.status in (200, 400), (resp.status, resp.body)
    if resp.status == 200:
        assert resp.headers["x-mock-backend"] == backends["beta"].backend_id, resp.headers
        assert resp.json()["model"] == "beta"


def test_reload_keeps_in_flight_streams_whole(gateway_factory):
    gw = gateway_factory({"nginx": {"workerProcesses": 1}}, name="reload")
    wait = rawhttp.chat_in_background(gw.port, paced(n=40, interval=20))
    time.sleep(0.3)
    gw.proc.send_signal(signal.SIGHUP)  # what `nginx -s reload` sends
    resp = wait(15)
    assert resp is not None, f"stream did not finish{gw.context()}"
    assert resp.status == 200 and resp.complete, (resp.status, gw.context())
    assert len(resp.events) == 1 + 40 + 1 + 1 and resp.data[-1] == "[DONE]", resp.events[-3:]
    assert gw.proc.poll() is None, f"nginx exited after a reload{gw.context()}"
    resp = rawhttp.request("127.0.0.1", gw.port, "GET", "/readyz")
    assert resp.status == 200, (resp.status, gw.context())

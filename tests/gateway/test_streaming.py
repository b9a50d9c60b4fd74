"""Streaming through the gateway keeps the backend's pacing: no buffering, no bursts, nothing lost or invented."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from . import rawhttp

DELTAS, INTERVAL_MS = 32, 20


def stream(gw, body, **kw) -> rawhttp.Response:
    return rawhttp.request("127.0.0.1", gw.port, "POST", "/v1/chat/completions", body, **kw)


def direct(backend, body, **kw) -> rawhttp.Response:
    return rawhttp.request("127.0.0.1", backend.port, "POST", "/v1/chat/completions", body, **kw)


def paced(model="alpha", n=DELTAS, interval=INTERVAL_MS, **mock):
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": dict(chunks=n, interval_ms=interval, **mock),
    }


def test_stream_timing_matches_the_backend(gateway, backends):
    # Direct first: the reference pacing of this (possibly busy) machine.
    ref = direct(backends["alpha"], paced())
    # Accept-Encoding: a gateway that gzips text/event-stream would hold events back to compress them.
    resp = stream(gateway, paced(), headers={"Accept-Encoding": "gzip"})
    ctx = f"status {resp.status} headers {resp.headers}{gateway.context()}"
    assert resp.status == 200, ctx
    assert resp.complete, f"stream did not end with the terminating chunk{ctx}"
    assert resp.headers.get("x-accel-buffering") == "no", ctx
    assert resp.headers.get("content-type", "").startswith("text/event-stream"), ctx
    assert resp.headers.get("x-gateway-model") == "alpha", ctx
    assert "gzip" not in resp.headers.get("content-encoding", ""), ctx
    # Frames received == frames sent: role chunk, the deltas, finish chunk, [DONE].
    assert len(resp.events) == len(ref.events) == 1 + DELTAS + 1 + 1, [e for _, e in resp.events]
    assert resp.data[-1] == "[DONE]"
    assert json.loads(resp.data[0])["choices"][0]["delta"]["role"] == "assistant"
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in resp.data[1 : 1 + DELTAS]]
    assert contents == [f"tok{i} " for i in range(DELTAS)]
    # Pacing: deltas arrive one by one, as far apart as the backend sent them.
    gaps, ref_gaps = resp.gaps()[:DELTAS], ref.gaps()[:DELTAS]
    burst = [round(g * 1000, 1) for g in gaps if g < INTERVAL_MS / 1000 / 4]
    assert len(burst) <= DELTAS // 8, f"events arrived in bursts: gaps (ms) {[round(g * 1000, 1) for g in gaps]}"
    assert statistics.median(gaps) >= 0.8 * statistics.median(ref_gaps), (gaps, ref_gaps)
    span = resp.events[DELTAS][0] - resp.events[0][0]
    assert span >= 0.8 * (DELTAS * INTERVAL_MS / 1000), span
    # The first event is not held back either (time to first event, from sending the request).
    assert resp.events[0][0] - resp.started < 0.5, resp.events[0][0] - resp.started


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/responses"])
def test_other_streams_pass_through_whole(gateway, path):
    body = {"model": "beta", "stream": True, "prompt": "hi", "input": "hi", "mock": {"chunks": 5, "interval_ms": 5}}
    resp = rawhttp.request("127.0.0.1", gateway.port, "POST", path, body)
    assert resp.status == 200 and resp.complete, (resp.status, resp.body, gateway.context())
    assert len(resp.events) == (5 + 2 if path == "/v1/completions" else 5 + 2), resp.events
    assert resp.headers.get("x-accel-buffering") == "no", resp.headers


def test_backend_dying_mid_stream_is_not_completed_by_the_gateway(gateway, backends):
    resp = stream(gateway, paced(n=20, interval=5, die_after_chunks=4))
    assert resp.status == 200
    assert "[DONE]" not in resp.data, "the gateway invented a [DONE] for a truncated stream"
    assert len(resp.events) == 4, resp.events
    assert not resp.complete, "a truncated upstream stream must not end with a clean terminating chunk"


def test_client_disconnect_stops_the_backend_stream(gateway, backends):
    alpha = backends["alpha"]
    before = alpha.stats()
    stream(gateway, paced(n=500, interval=10), close_after_events=3)
    time.sleep(1.0)
    after = alpha.stats()
    assert after["disconnects"] > before["disconnects"], (before, after)
    sent = after["chunks_sent"] - before["chunks_sent"]
    assert sent < 150, f"the backend kept streaming ({sent} chunks) after the client went away"


def test_upstream_connections_are_kept_alive(gateway, backends):
    beta = backends["beta"]
    beta.reset()
    for _ in range(12):
        resp = rawhttp.request("127.0.0.1", gateway.port, "POST", "/v1/embeddings", {"model": "beta", "input": "x"})
        assert resp.status == 200, (resp.status, resp.body)
    stats = beta.stats()
    # The gateway's own health checks may add a connection or two; without keepalive it would be >= 12.
    assert stats["connections"] <= 6, f"upstream keepalive not used: {stats['connections']} connections"


def test_connection_header_is_not_forwarded_as_close(gateway, backends):
    resp = rawhttp.request(
        "127.0.0.1", gateway.port, "POST", "/v1/chat/completions", {"model": "alpha", "mock": {"echo_headers": True}}
    )
    echo = json.loads(resp.body)["mock_echo"]
    assert echo["headers"].get("connection", "").lower() != "close", echo

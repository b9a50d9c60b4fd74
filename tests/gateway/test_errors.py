"""Upstream failures reach the client as the error contract says, and never hang the gateway."""

from __future__ import annotations

import time

import pytest

from .api import describe, error, get, post
from .conftest import READ_TIMEOUT_SECONDS, ready_of


@pytest.mark.parametrize("status", [400, 422, 429, 500, 503])
def test_upstream_errors_pass_through(gateway, backends, status):
    resp = post(gateway, "/v1/chat/completions", {"model": "alpha", "mock": {"status": status}})
    assert resp.status_code == status, describe(resp, gateway)
    assert resp.headers.get("X-Mock-Backend") == backends["alpha"].backend_id, describe(resp, gateway)
    assert resp.json()["error"]["message"] == f"mock error {status}", describe(resp, gateway)


def test_backend_down_from_the_start_is_503_with_retry_after(gateway):
    # gamma refuses connections (scaled to zero): its health check says unreachable.
    t0 = time.monotonic()
    resp = post(gateway, "/v1/chat/completions", {"model": "gamma"})
    err = error(resp, 503, gateway, code="model_not_ready")
    assert time.monotonic() - t0 < 1, "a model known to be down is answered at once"
    assert err["type"] == "service_unavailable" and err["param"] == "model", err
    retry = resp.headers.get("Retry-After", "")
    assert retry.isdigit() and int(retry) > 0, describe(resp, gateway)


def test_backend_reset_is_502_json(gateway):
    error(post(gateway, "/v1/chat/completions", {"model": "alpha", "mock": {"close": True}}), 502, gateway)


def test_backend_hang_is_504_json_after_the_read_timeout(gateway):
    t0 = time.monotonic()
    resp = post(gateway, "/v1/chat/completions", {"model": "alpha", "mock": {"delay_ms": 30000}})
    took = time.monotonic() - t0
    error(resp, 504, gateway)
    assert READ_TIMEOUT_SECONDS - 0.2 <= took < READ_TIMEOUT_SECONDS + 3, took


def test_model_not_ready_is_503_with_retry_after(gateway, backends):
    before = backends["delta"].stats()["requests"].get("/v1/chat/completions", 0)
    resp = post(gateway, "/v1/chat/completions", {"model": "delta"})
    error(resp, 503, gateway)
    retry = resp.headers.get("Retry-After", "")
    assert retry.isdigit() and int(retry) > 0, describe(resp, gateway)
    after = backends["delta"].stats()["requests"].get("/v1/chat/completions", 0)
    assert after == before, "a request for a model that is not ready reached its backend"


def test_models_marks_readiness(gateway):
    entries = {m["id"]: m for m in get(gateway, "/v1/models").json()["data"]}
    assert ready_of(entries["alpha"]) is True, entries["alpha"]
    assert ready_of(entries["beta"]) is True, entries["beta"]
    assert ready_of(entries["gamma"]) is False, entries["gamma"]  # down
    assert ready_of(entries["delta"]) is False, entries["delta"]  # loading


def test_models_stays_fast_with_a_backend_down_or_hanging(gateway):
    # gamma refuses connections, delta answers 503; /v1/models must come from the cache.
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        resp = get(gateway, "/v1/models")
        times.append(time.monotonic() - t0)
        assert resp.status_code == 200, describe(resp, gateway)
    assert max(times) < 0.5, times  # a live fan-out would wait on the backends


def test_healthz_and_readyz_do_not_depend_on_backends(gateway):
    for path in ("/healthz", "/readyz"):
        resp = get(gateway, path)
        assert resp.status_code == 200, describe(resp, gateway)


def test_unknown_path_is_404_json(gateway):
    resp = get(gateway, "/v2/nothing")
    assert resp.status_code == 404, describe(resp, gateway)
    assert "error" in resp.json(), describe(resp, gateway)

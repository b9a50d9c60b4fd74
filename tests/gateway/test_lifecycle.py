"""Gateway and model lifecycles: models that come up and go away, bad key files, graceful stop, empty catalog."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from . import rawhttp, runner
from .api import describe, error, get, post, routed_to
from .backends import MockBackend
from .conftest import API_KEYS_SECRET, ready_of
from .test_streaming import paced


def wait_ready(gw, model: str, want: bool, timeout: float = 6.0) -> dict:
    deadline, entry = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        entry = {m["id"]: m for m in get(gw, "/v1/models").json()["data"]}.get(model, {})
        if ready_of(entry) is want:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"{model} never became ready={want}: {entry}{gw.context()}")


def test_model_that_finishes_loading_then_dies(gateway_factory, tmp_path):
    late = MockBackend("--served-model-name", "delta", "--mock-startup-seconds", "1.5", log_dir=tmp_path).start()
    try:
        gw = gateway_factory({"routing": {"endpoints": {"delta": late.address}}}, name="lifecycle")
        error(post(gw, "/v1/chat/completions", {"model": "delta"}), 503, gw)
        wait_ready(gw, "delta", True)
        routed_to(post(gw, "/v1/chat/completions", {"model": "delta"}), late, gw)
        late.stop()
        wait_ready(gw, "delta", False)
        # Down (scaled to zero) like loading: 503 + Retry-After, a model to retry later.
        resp = post(gw, "/v1/chat/completions", {"model": "delta"})
        error(resp, 503, gw, code="model_not_ready")
        assert resp.headers.get("Retry-After", "").isdigit(), describe(resp, gw)
    finally:
        late.stop()


def test_graceful_stop_lets_streams_finish(base_values):
    gw = runner.start(runner.deep_merge(base_values, {"nginx": {"workerProcesses": 1}}), name="stop")
    try:
        result = {}
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "resp", rawhttp.request("127.0.0.1", gw.port, "POST", "/v1/chat/completions", paced(n=30, interval=20))
            )
        )
        thread.start()
        time.sleep(0.3)
        gw.proc.send_signal(signal.SIGQUIT)  # what the Deployment's preStop hook sends
        thread.join(15)
        resp = result.get("resp")
        assert resp is not None and resp.status == 200 and resp.complete, gw.context()
        assert len(resp.events) == 1 + 30 + 1 + 1 and resp.data[-1] == "[DONE]", resp.events[-2:]
        assert gw.proc.wait(10) == 0, gw.context()
    finally:
        runner.cleanup(gw)


@pytest.mark.parametrize("keys_file", ["not json", "[]", json.dumps([{"name": "x"}])])
def test_a_bad_api_keys_file_stops_nginx_at_start(base_values, keys_file):
    values = runner.deep_merge(base_values, {"auth": {"enabled": True, "existingSecret": API_KEYS_SECRET}})
    with pytest.raises(runner.GatewayError) as failed:
        gw = runner.start(
            values, secrets={API_KEYS_SECRET: {"api-keys.json": keys_file}}, name="badkeys", ready_timeout=5
        )
        runner.cleanup(gw)  # only reached when it wrongly started
    assert "api-keys.json" in str(failed.value) or "API key" in str(failed.value), failed.value


def test_empty_catalog_starts_and_routes_nothing(nginx_bin):
    gw = runner.start({"models": []}, name="empty")
    try:
        assert get(gw, "/readyz").status_code == 200
        body = get(gw, "/v1/models").json()
        assert body == {"object": "list", "data": []}, body
        error(post(gw, "/v1/chat/completions", {"model": "alpha"}), 404, gw, code="model_not_found")
        resp = post(gw, "/v1/chat/completions", {})
        assert resp.status_code in (400, 404), describe(resp, gw)
        error(resp, resp.status_code, gw)
    finally:
        runner.cleanup(gw)

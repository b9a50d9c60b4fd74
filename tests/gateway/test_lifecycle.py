"""Gateway and model lifecycles: models that come up and go away, bad key files, graceful stop, empty catalog."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml

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
        wait = rawhttp.chat_in_background(gw.port, paced(n=30, interval=20))
        time.sleep(0.3)
        gw.proc.send_signal(signal.SIGQUIT)  # what the Deployment's preStop hook sends
        resp = wait(15)
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


def _routes_and_checksum(values: dict) -> tuple[str, str]:
    manifests = runner.render(values)
    cm = next(m for m in manifests if m["kind"] == "ConfigMap" and "routes.json" in (m.get("data") or {}))
    deploy = next(m for m in manifests if m["kind"] == "Deployment")
    return cm["data"]["routes.json"], deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_a_catalog_change_reloads_nginx_in_place_and_streams_finish(base_values, tmp_path):
    """What the kubelet does to the mounted ConfigMap on a catalog change (the file replaced in
    place), done to the running gateway: the new model is routed without a restart, a stream in
    flight finishes whole, and a file that does not load leaves the running table alone."""
    added = MockBackend("--served-model-name", "epsilon", log_dir=tmp_path).start()
    gw = runner.start(runner.deep_merge(base_values, {"routing": {"reload": {"intervalSeconds": 1}}}), name="reload")
    try:
        models = yaml.safe_load((runner.chart_dir().parents[1] / "tests/gateway/models.yaml").read_text())["models"]
        changed = runner.deep_merge(
            gw.values,
            {
                "models": [*models, {"modelName": "epsilon", "huggingfaceId": "org/Epsilon"}],
                "routing": {"endpoints": {"epsilon": added.address}},
            },
        )
        routes, checksum = _routes_and_checksum(changed)
        assert checksum == _routes_and_checksum(gw.values)[1], "a catalog change would roll the pods"
        off = {"routing": {"reload": {"intervalSeconds": 0}}}
        assert (
            _routes_and_checksum(runner.deep_merge(changed, off))[1]
            != _routes_and_checksum(runner.deep_merge(gw.values, off))[1]
        ), "with reload off, a catalog change must roll the pods"
        error(post(gw, "/v1/chat/completions", {"model": "epsilon"}), 404, gw, code="model_not_found")

        workers = set(gw.workers())
        wait = rawhttp.chat_in_background(gw.port, paced(n=30, interval=100))
        time.sleep(0.5)
        target = gw.root / "config" / "routes.json"
        (tmp_path / "routes.json").write_text(routes)
        os.replace(tmp_path / "routes.json", target)
        start = time.monotonic()
        while post(gw, "/v1/chat/completions", {"model": "epsilon"}).status_code != 200:
            assert time.monotonic() - start < 10, f"the added model was not routed within 10 s{gw.context()}"
            time.sleep(0.2)
        routed_to(post(gw, "/v1/chat/completions", {"model": "epsilon"}), added, gw)
        assert gw.proc.poll() is None and set(gw.workers()) - workers, "nginx did not start new workers"
        resp = wait(15)
        assert resp is not None and resp.status == 200 and resp.complete, gw.context()
        assert len(resp.events) == 1 + 30 + 1 + 1 and resp.data[-1] == "[DONE]", resp.events[-2:]
        start = time.monotonic()
        while workers & set(gw.workers()):  # the old workers exit once their requests are done
            assert time.monotonic() - start < 10, f"old workers {workers & set(gw.workers())} never exited"
            time.sleep(0.2)

        # A table that does not load: the master says why, the workers keep the last good one.
        workers = set(gw.workers())
        (tmp_path / "routes.json").write_text("{not json")
        os.replace(tmp_path / "routes.json", target)
        start = time.monotonic()
        while "routes.json is not valid JSON" not in gw.error_log(tail=200):
            assert time.monotonic() - start < 10, f"no error about the bad routes.json{gw.context()}"
            time.sleep(0.2)
        assert set(gw.workers()) == workers, gw.context()
        routed_to(post(gw, "/v1/chat/completions", {"model": "epsilon"}), added, gw)
    finally:
        runner.cleanup(gw)
        added.stop()

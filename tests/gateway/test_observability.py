"""The JSON access log and the Prometheus metrics."""

from __future__ import annotations

import signal
import time

import requests

from .api import post, routed_to


def last_log_line_after(gw, seen: int, timeout: float = 3.0) -> dict:
    """The newest access log entry once there are more than `seen` (nginx writes after the response)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = gw.access_log()
        if len(entries) > seen:
            return entries[-1]
        time.sleep(0.05)
    raise AssertionError(f"no new access log line:\n{gw.raw_access_log()[-3000:]}{gw.context()}")


def test_access_log_is_json_with_the_routing_fields(gateway, backends):
    seen = len(gateway.access_log())
    resp = post(gateway, "/v1/chat/completions", {"model": "alpha-latest"})
    routed_to(resp, backends["alpha"], gateway)
    entry = last_log_line_after(gateway, seen)
    assert "_not_json" not in entry, entry
    text = {k.lower(): v for k, v in entry.items()}
    assert str(text.get("status")) == "200", entry
    assert any(str(v) == "alpha" for k, v in text.items() if "model" in k), f"routed model not logged: {entry}"
    assert any(backends["alpha"].address in str(v) for v in entry.values()), f"upstream not logged: {entry}"
    assert any("time" in k for k in text), f"no timing field: {entry}"
    assert all(not str(line).strip() or "_not_json" not in line for line in gateway.access_log()), (
        "an access log line is not JSON"
    )


def test_metrics_count_requests_per_model(gateway, backends):
    def count(model: str) -> float:
        return gateway.metric("gateway_requests_total", model=model)

    resp = requests.get(gateway.metrics_url, timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("Content-Type", "").startswith("text/plain"), resp.headers
    assert "# TYPE" in resp.text, resp.text[:2000]
    before_alpha, before_beta = count("alpha"), count("beta")
    for _ in range(3):
        routed_to(post(gateway, "/v1/embeddings", {"model": "alpha", "input": "x"}), backends["alpha"], gateway)
    routed_to(post(gateway, "/v1/embeddings", {"model": "beta-small", "input": "x"}), backends["beta"], gateway)
    after_alpha, after_beta = count("alpha"), count("beta")
    assert after_alpha - before_alpha == 3, (before_alpha, after_alpha, gateway.metrics_text())
    assert after_beta - before_beta == 1, (before_beta, after_beta)


def test_metrics_are_not_on_the_api_port(gateway):
    assert requests.get(gateway.url + "/metrics", timeout=5).status_code in (403, 404)


def test_a_worker_that_exits_hands_in_what_it_counted(gateway_factory, backends):
    """Each worker adds its counts to /metrics every second; a reload's old workers add what
    they still hold as they exit (the reload comes right after the requests, within the second)."""
    gw = gateway_factory({"nginx": {"workerProcesses": 2}}, name="metrics-reload")
    before = gw.metric("gateway_requests_total", model="alpha", status="200")
    for _ in range(5):
        routed_to(post(gw, "/v1/embeddings", {"model": "alpha", "input": "x"}), backends["alpha"], gw)
    gw.proc.send_signal(signal.SIGHUP)  # what `nginx -s reload` sends
    after = gw.metric("gateway_requests_total", model="alpha", status="200")
    assert after == before + 5, (before, after, gw.context())

"""The dashboard and the alerts read only metric names the stack exports: the gateway's from the
chart's own nginx + Lua, llama.cpp's from a real llama-server, both scraped here after a streamed
chat went through the gateway to llama-server. vLLM's are checked against a real vLLM in the e2e
suite (tests/e2e/test_stack.py), where vLLM runs."""

from __future__ import annotations

import json

import requests

from harness import promql


def _chat(gateway) -> None:
    body = {
        "model": "beta",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with requests.post(gateway.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as resp:
        assert resp.status_code == 200, resp.text + gateway.context()
        events = [line for line in resp.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]", events[-3:]
    assert any(b'"usage"' in e for e in events), events[-3:]


def test_every_gateway_and_llamacpp_name_is_exported(queries, gateway, llama_server):
    _chat(gateway)
    exports = {
        "gateway": promql.exported_names(gateway.metrics_text()),
        "llama.cpp": promql.exported_names(requests.get(f"http://{llama_server}/metrics", timeout=10).text),
    }
    used = promql.metric_names(queries)
    problems = promql.unexported(used, exports)
    assert not problems, "\n".join(problems)
    # Both exporters are really read by the queries, and vLLM's names wait for the e2e check.
    parts = {promql.exporter_of(n) for names in used.values() for n in names}
    assert parts == {"gateway", "vllm", "llama.cpp"}, parts


def test_a_name_no_exporter_serves_is_reported(gateway):
    exports = {"gateway": promql.exported_names(requests.get(gateway.metrics_url, timeout=10).text)}
    problems = promql.unexported({"q": ["gateway_requests_total", "gateway_request_total", "up"]}, exports)
    assert len(problems) == 2 and "gateway_request_total" in problems[0] and "up" in problems[1], problems


def test_the_streamed_chat_is_in_the_histograms_the_dashboard_reads(gateway):
    """The scrape above is of a gateway that measured something: the stream's time to first
    token and its tokens, as the TTFT panels and alert read them."""
    _chat(gateway)
    text = gateway.metrics_text()
    counts = {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(("gen_ai_server_time_to_first_token_seconds_count", "gateway_tokens_total"))
    }
    assert any(k.startswith("gen_ai_server_time_to_first_token_seconds_count") and v >= 1 for k, v in counts.items()), (
        json.dumps(counts, indent=1)
    )
    assert any('model="beta"' in k and 'type="output"' in k and v >= 1 for k, v in counts.items()), counts

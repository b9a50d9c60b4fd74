"""The mock OpenAI backend (images/mock-openai/mock_openai.py), driven over HTTP on a free port."""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import statistics
import subprocess
import time

import pytest

from gateway import rawhttp
from gateway.backends import MOCK, MockBackend, wait_http

spec = importlib.util.spec_from_file_location("mock_openai", MOCK)
mock_openai = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mock_openai)

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/tokenize", "/detokenize"]


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    backend = MockBackend(
        "--model",
        "org/Alpha-7B",
        "--served-model-name",
        "alpha",
        "alpha-latest",
        log_dir=tmp_path_factory.mktemp("mock"),
    ).start()
    yield backend
    backend.stop()


def call(mock, path, body=None, method="POST", headers=None):
    return rawhttp.request("127.0.0.1", mock.port, method, path, body, headers=headers)


class TestCommandLine:
    def test_vllm_form_with_served_names(self):
        args = mock_openai.parse_args(
            [
                "--model",
                "Qwen/Q",
                "--served-model-name",
                "q",
                "q2",
                "--tensor-parallel-size",
                "2",
                "--dtype",
                "auto",
                "--trust-remote-code",
            ]
        )
        assert (args.model_id, args.served) == ("Qwen/Q", ["q", "q2"])

    def test_vllm_serve_positional(self):
        args = mock_openai.parse_args(["serve", "facebook/opt-125m", "--port", "9000", "--max-model-len", "2048"])
        assert (args.served, args.port) == (["facebook/opt-125m"], 9000)

    def test_sglang_and_llama_server_forms(self):
        sg = mock_openai.parse_args(["--model-path", "org/M", "--tp", "2", "--port", "30000"])
        assert (sg.served, sg.port) == (["org/M"], 30000)
        ll = mock_openai.parse_args(
            [
                "--model",
                "/mnt/models/x.gguf",
                "--alias",
                "tiny",
                "--ctx-size",
                "2048",
                "-ngl",
                "99",
                "--threads",
                "4",
                "--host",
                "0.0.0.0",
                "--port",
                "8080",
            ]
        )
        assert (ll.served, ll.host, ll.port) == (["tiny"], "0.0.0.0", 8080)

    @pytest.mark.parametrize(
        "argv,any_model",
        [
            (["--model", "/mnt/models/x.gguf", "--alias", "tiny"], True),  # llama-server
            (["--model", "/mnt/models/X.GGUF", "--port", "8080"], True),  # llama-server, no alias
            (["--model", "org/M", "--alias", "m"], True),  # an alias is llama-server's flag
            (["--model", "org/M", "--served-model-name", "m"], False),  # vLLM
            (["serve", "org/M"], False),  # vllm serve
            (["--model-path", "org/M"], False),  # SGLang
            (["--model", "/m/x.gguf", "--served-model-name", "x"], False),  # vLLM serving a GGUF file
            (["--model", "org/M", "--mock-any-model"], True),
        ],
    )
    def test_which_forms_accept_any_model_name(self, argv, any_model):
        args = mock_openai.parse_args(argv)
        assert args.any_model is any_model, args

    def test_unknown_flags_are_ignored_with_a_warning(self, capsys):
        args = mock_openai.parse_args(["--model", "m", "--some-new-flag", "value", "--other-switch", "--port", "1234"])
        assert (args.served, args.port) == (["m"], 1234)
        assert "--some-new-flag value --other-switch" in capsys.readouterr().err

    def test_lora_modules_in_both_of_vllms_forms(self):
        args = mock_openai.parse_args(
            [
                "--model",
                "org/Base",
                "--served-model-name",
                "base",
                "--enable-lora",
                "--max-loras",
                "2",
                "--lora-modules",
                '{"base_model_name": "base", "name": "sql", "path": "org/sql-lora"}',
                "chat=/data/adapters/chat",
            ]
        )
        assert args.adapters == {"sql": "org/sql-lora", "chat": "/data/adapters/chat"}
        assert args.served == ["base"]


class TestEndpoints:
    def test_health_and_models(self, mock):
        assert call(mock, "/health", method="GET").status == 200
        models = call(mock, "/v1/models", method="GET").json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["alpha", "alpha-latest"]
        assert all(m["object"] == "model" for m in models["data"])

    @pytest.mark.parametrize("path", ROUTES)
    def test_every_route_says_who_answered(self, mock, path):
        resp = call(
            mock,
            path,
            {
                "model": "alpha-latest",
                "messages": [{"role": "user", "content": "hi"}],
                "prompt": "hi",
                "input": "hi",
                "tokens": [104, 105],
            },
        )
        assert resp.status == 200, resp.body
        assert resp.headers["x-mock-backend"] == mock.backend_id
        assert mock.backend_id.startswith("alpha@") and mock.backend_id.endswith(f":{mock.port}")
        body = resp.json()
        assert body["system_fingerprint"] == mock.backend_id
        if path.startswith("/v1/"):
            assert body["model"] == "alpha-latest"  # the name the request used, as vLLM answers

    def test_response_shapes(self, mock):
        chat = call(mock, "/v1/chat/completions", {"model": "alpha", "mock": {"chunks": 3}}).json()
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"] == {"role": "assistant", "content": "tok0 tok1 tok2 ", "tool_calls": []}
        assert chat["usage"]["completion_tokens"] == 3
        emb = call(mock, "/v1/embeddings", {"model": "alpha", "input": ["a", "b"]}).json()
        assert [d["index"] for d in emb["data"]] == [0, 1] and len(emb["data"][0]["embedding"]) == 8
        tok = call(mock, "/tokenize", {"model": "alpha", "prompt": "hi"}).json()
        assert tok["tokens"] == [104, 105] and tok["count"] == 2
        assert call(mock, "/detokenize", {"model": "alpha", "tokens": [104, 105]}).json()["prompt"] == "hi"
        resp = call(mock, "/v1/responses", {"model": "alpha", "input": "hi", "mock": {"chunks": 2}}).json()
        assert resp["object"] == "response" and resp["output"][0]["content"][0]["text"] == "tok0 tok1 "

    def test_model_it_does_not_serve_is_404(self, mock):
        resp = call(mock, "/v1/chat/completions", {"model": "nope"})  # vLLM form: strict, as vLLM
        assert resp.status == 404
        assert "nope" in resp.json()["error"]["message"]

    def test_missing_model_means_first_served_name(self, mock):
        assert call(mock, "/v1/completions", {"prompt": "x"}).json()["model"] == "alpha"

    def test_bad_requests(self, mock):
        bad = rawhttp.request("127.0.0.1", mock.port, "POST", "/v1/chat/completions", b"{not json")
        assert bad.status == 400 and "error" in bad.json()
        wrong_type = call(mock, "/v1/chat/completions", b"{}", headers={"Content-Type": "text/plain"})
        assert wrong_type.status == 400
        assert call(mock, "/nowhere", method="GET").status == 404
        assert call(mock, "/v1/chat/completions", method="GET").status == 405


class TestStreaming:
    def test_chat_stream_format(self, mock):
        resp = call(
            mock,
            "/v1/chat/completions",
            {
                "model": "alpha",
                "stream": True,
                "stream_options": {"include_usage": True},
                "mock": {"chunks": 4, "interval_ms": 1},
            },
        )
        assert resp.status == 200 and resp.complete
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        assert all(ev.startswith("data: ") for _, ev in resp.events)
        assert resp.data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in resp.data[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["choices"][0]["delta"]["content"] for c in chunks[1:5]] == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
        assert chunks[5]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        assert chunks[6]["choices"] == [] and chunks[6]["usage"]["completion_tokens"] == 4
        assert all(c["system_fingerprint"] == mock.backend_id and c["model"] == "alpha" for c in chunks)

    def test_completions_and_responses_streams(self, mock):
        cmpl = call(
            mock, "/v1/completions", {"model": "alpha", "stream": True, "mock": {"chunks": 2, "interval_ms": 1}}
        )
        assert [json.loads(d)["choices"][0]["text"] for d in cmpl.data[:-1]] == ["tok0 ", "tok1 ", ""]
        assert cmpl.data[-1] == "[DONE]"
        resp = call(mock, "/v1/responses", {"model": "alpha", "stream": True, "mock": {"chunks": 2, "interval_ms": 1}})
        kinds = [ev.split("\n")[0] for _, ev in resp.events]
        assert kinds == [
            "event: response.created",
            "event: response.output_text.delta",
            "event: response.output_text.delta",
            "event: response.completed",
        ]

    def test_pacing(self, mock):
        resp = call(
            mock, "/v1/chat/completions", {"model": "alpha", "stream": True, "mock": {"chunks": 10, "interval_ms": 30}}
        )
        assert len(resp.events) == 1 + 10 + 1 + 1
        first_to_last = resp.events[10][0] - resp.events[0][0]
        assert 0.27 <= first_to_last <= 0.6, first_to_last
        assert statistics.median(resp.gaps()[:10]) >= 0.02, resp.gaps()

    def test_die_after_chunks_ends_without_done(self, mock):
        resp = call(
            mock,
            "/v1/chat/completions",
            {"model": "alpha", "stream": True, "mock": {"chunks": 20, "interval_ms": 1, "die_after_chunks": 3}},
        )
        assert resp.status == 200
        assert not resp.complete
        assert len(resp.events) == 3 and "[DONE]" not in resp.data

    def test_client_disconnect_is_counted_and_stops_the_stream(self, mock):
        mock.reset()
        rawhttp.request(
            "127.0.0.1",
            mock.port,
            "POST",
            "/v1/chat/completions",
            {"model": "alpha", "stream": True, "mock": {"chunks": 100, "interval_ms": 10}},
            close_after_events=3,
        )
        time.sleep(0.3)
        stats = mock.stats()
        assert stats["disconnects"] == 1
        assert stats["chunks_sent"] < 10, stats


class TestControls:
    def test_status(self, mock):
        resp = call(mock, "/v1/chat/completions", {"model": "alpha", "mock": {"status": 503}})
        assert resp.status == 503 and resp.headers["retry-after"] == "1"
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}

    def test_delay(self, mock):
        t0 = time.monotonic()
        assert call(mock, "/v1/embeddings", {"model": "alpha", "input": "x", "mock": {"delay_ms": 200}}).status == 200
        assert time.monotonic() - t0 >= 0.2

    def test_close_without_answer(self, mock):
        with pytest.raises(ConnectionError):
            call(mock, "/v1/chat/completions", {"model": "alpha", "mock": {"close": True}})

    def test_echo_headers(self, mock):
        body = {"model": "alpha", "mock": {"echo_headers": True}}
        echo = call(mock, "/v1/chat/completions", body, headers={"X-Trace": "t1"}).json()["mock_echo"]
        assert echo["headers"]["x-trace"] == "t1"
        assert echo["http_version"] == "HTTP/1.1" and echo["body_bytes"] == len(json.dumps(body))

    def test_keep_alive_and_stats(self, mock):
        mock.reset()
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
        for _ in range(3):
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps({"model": "alpha", "stream": True, "mock": {"chunks": 2, "interval_ms": 1}}),
                {"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            assert resp.read().endswith(b"data: [DONE]\n\n")
        conn.close()
        stats = mock.stats()
        assert stats["connections"] == 2  # the three requests above on one, /mock/stats on another
        assert stats["requests"]["/v1/chat/completions"] == 3
        assert stats["chunks_sent"] == 3 * 5 and stats["streams_completed"] == 3

    def test_chunked_request_body(self, mock):
        body = json.dumps({"model": "alpha", "input": "x"}).encode()
        raw = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        assert rawhttp.request("127.0.0.1", mock.port, "", "", raw=raw).status == 200


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "/mnt/models/x.gguf", "--alias", "tiny"],  # llama-server: serves one model, ignores the name
        ["--model", "org/M", "--served-model-name", "m", "--mock-any-model"],
    ],
)
def test_any_model_name_is_answered(tmp_path, args):
    backend = MockBackend(*args, log_dir=tmp_path).start()
    try:
        for path in ("/v1/chat/completions", "/v1/embeddings"):
            resp = call(backend, path, {"model": "some-other-name", "input": "x"})
            assert resp.status == 200, resp.body
            assert resp.json()["model"] == "some-other-name"
        assert resp.headers["x-mock-backend"] == backend.backend_id
    finally:
        backend.stop()


def test_startup_seconds_model_is_loading(tmp_path):
    backend = MockBackend("--served-model-name", "slow", "--mock-startup-seconds", "0.6", log_dir=tmp_path).start()
    try:
        assert call(backend, "/health", method="GET").status == 503
        assert call(backend, "/v1/chat/completions", {"model": "slow"}).status == 503
        assert call(backend, "/v1/models", method="GET").status == 200  # like llama-server while loading
        assert wait_http(backend.url + "/health", timeout=3) == 200
    finally:
        backend.stop()


def test_sigterm_stops_it(tmp_path):
    backend = MockBackend("--served-model-name", "x", log_dir=tmp_path).start()
    backend.proc.terminate()
    assert backend.proc.wait(5) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", backend.port), timeout=1)


@pytest.mark.parametrize(
    "name,args,served",
    [
        ("vllm", ["serve", "org/M", "--served-model-name", "m", "--tensor-parallel-size", "1"], "m"),
        (
            "llama-server",
            ["--model", "/mnt/models/x.gguf", "--alias", "tiny", "-ngl", "0", "--ctx-size", "512"],
            "tiny",
        ),
    ],
)
def test_runs_under_the_real_servers_names(tmp_path, name, args, served):
    """The image links vllm and llama-server to the mock: the model charts' commands run unchanged."""
    link = tmp_path / name
    link.symlink_to(MOCK)
    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(link), *args, "--host", "127.0.0.1", "--port", "0"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while "serving" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        line = next(x for x in log.read_text().splitlines() if "serving" in x)
        assert line.startswith(f"mock-openai: serving {served} on 127.0.0.1:"), line
    finally:
        proc.terminate()
        proc.wait(5)

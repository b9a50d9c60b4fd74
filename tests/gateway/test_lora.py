"""LoRA adapters through the gateway: an adapter's name reaches its model's pods and is listed in
/v1/models as vLLM lists it; API keys grant adapters by name. The backend is the mock started with
the exact arguments charts/vllm-models renders for the same catalog entry (--enable-lora
--lora-modules ...), so it serves the adapters under their names as vLLM does."""

from __future__ import annotations

import json
import socketserver
import threading

import pytest
import requests
import yaml

from harness.render import find, render_chart

from .api import describe, error, get, post, routed_to
from .backends import MockBackend
from .conftest import API_KEYS_SECRET
from .runner import MODELS

ENTRY = {
    "modelName": "base",
    "huggingfaceId": "org/Base",
    "adapters": [
        {"name": "sql", "huggingfaceId": "org/sql-lora"},
        {"name": "chat", "path": "adapters/chat"},
    ],
}
KEYS = [
    {"name": "adapter-only", "key": "sk-test-adapter-only-0001", "models": ["sql"]},
    {"name": "base-only", "key": "sk-test-base-only-000002", "models": ["base", "alpha", "delta"]},
]
ADAPTER_ONLY = {"Authorization": "Bearer sk-test-adapter-only-0001"}
BASE_ONLY = {"Authorization": "Bearer sk-test-base-only-000002"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def _engine_args() -> list[str]:
    """The vLLM container's arguments for ENTRY, without the port (the mock picks its own)."""
    [deploy] = find(render_chart("vllm-models", {"models": [ENTRY]}), "Deployment")
    args = list(deploy["spec"]["template"]["spec"]["containers"][0]["args"])
    i = args.index("--port")
    del args[i : i + 2]
    assert "--lora-modules" in args, args
    return args


@pytest.fixture(scope="module")
def lora_backend(tmp_path_factory):
    backend = MockBackend(*_engine_args(), log_dir=tmp_path_factory.mktemp("lora")).start()
    yield backend
    backend.stop()


def _values(backend: MockBackend) -> dict:
    """The test catalog (models.yaml) with ENTRY added, on its own backend."""
    models = yaml.safe_load(MODELS.read_text())["models"] + [ENTRY]
    return {"models": models, "routing": {"endpoints": {"base": backend.address}}}


@pytest.fixture(scope="module")
def lora_gateway(gateway_factory, lora_backend):
    return gateway_factory(_values(lora_backend), name="lora")


@pytest.fixture(scope="module")
def lora_gateway_keys(gateway_factory, lora_backend):
    values = dict(_values(lora_backend), auth={"enabled": True, "existingSecret": API_KEYS_SECRET})
    return gateway_factory(
        values, secrets={API_KEYS_SECRET: {"api-keys.json": json.dumps(KEYS)}}, name="lora-keys", headers=BASE_ONLY
    )


def test_an_adapter_name_reaches_its_model_and_the_engine_answers_it(lora_gateway, lora_backend):
    for name in ("sql", "chat", "base"):
        resp = post(lora_gateway, "/v1/chat/completions", dict(CHAT, model=name))
        routed_to(resp, lora_backend, lora_gateway)
        assert resp.json()["model"] == name, describe(resp, lora_gateway)
        assert resp.headers.get("X-Gateway-Model") == name, describe(resp, lora_gateway)
    # Upstream, the header names the model whose pods serve the adapter (what an InferencePool
    # HTTPRoute in front matches); the body still names the adapter.
    echo = post(lora_gateway, "/v1/chat/completions", dict(CHAT, model="sql", mock={"echo_headers": True}))
    assert echo.json()["mock_echo"]["headers"].get("x-gateway-model") == "base", echo.json()["mock_echo"]


def test_models_lists_adapters_with_parent_and_root_as_the_engine_does(lora_gateway, lora_backend):
    models = get(lora_gateway, "/v1/models").json()["data"]
    listed = {m["id"]: m for m in models}
    engine = {m["id"]: m for m in requests.get(lora_backend.url + "/v1/models", timeout=5).json()["data"]}
    assert set(engine) == {"base", "sql", "chat"} <= set(listed), (listed, engine)
    # Each adapter right after its model, as vLLM lists them.
    ids = [m["id"] for m in models]
    assert ids[ids.index("base") :][:3] == ["base", "sql", "chat"], ids
    for name in ("sql", "chat"):
        assert (listed[name]["parent"], listed[name]["root"]) == (engine[name]["parent"], engine[name]["root"])
        assert listed[name]["ready"] is True, listed[name]
    assert listed["base"]["parent"] is None
    one = get(lora_gateway, "/v1/models/sql").json()
    assert (one["id"], one["parent"], one["root"]) == ("sql", "base", "org/sql-lora"), one


def test_api_keys_grant_adapters_by_their_own_name(lora_gateway_keys, lora_backend):
    gw = lora_gateway_keys
    routed_to(post(gw, "/v1/chat/completions", dict(CHAT, model="sql"), headers=ADAPTER_ONLY), lora_backend, gw)
    routed_to(post(gw, "/v1/chat/completions", dict(CHAT, model="base"), headers=BASE_ONLY), lora_backend, gw)
    # Neither grants the other: a key learns nothing of what it may not use.
    for headers, model in ((ADAPTER_ONLY, "base"), (ADAPTER_ONLY, "chat"), (BASE_ONLY, "sql")):
        err = error(
            post(gw, "/v1/chat/completions", dict(CHAT, model=model), headers=headers), 404, gw, code="model_not_found"
        )
        assert "sql" not in err["message"] or model == "sql", err
    assert [m["id"] for m in get(gw, "/v1/models", headers=ADAPTER_ONLY).json()["data"]] == ["sql"]
    assert "sql" not in [m["id"] for m in get(gw, "/v1/models", headers=BASE_ONLY).json()["data"]]
    error(get(gw, "/v1/models/sql", headers=BASE_ONLY), 404, gw, code="model_not_found")


def test_health_probes_name_their_model_like_routed_requests(gateway_factory, lora_backend):
    """A gateway in front of the pods (an InferencePool HTTPRoute matching X-Gateway-Model) routes
    the probes too."""
    seen: list[bytes] = []

    class Probe(socketserver.BaseRequestHandler):
        def handle(self):
            seen.append(self.request.recv(4096))
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        values = _values(lora_backend)
        values["routing"]["endpoints"]["base"] = f"127.0.0.1:{server.server_address[1]}"
        gateway_factory(values, name="lora-probe")
        probes = [r for r in seen if r.startswith(b"GET /health ")]
        assert probes, seen
        assert b"\r\nX-Gateway-Model: base\r\n" in probes[0], probes[0]
    finally:
        server.shutdown()
        server.server_close()

"""`helm test` hooks: every chart ships a hardened test Pod that checks what it serves.

Rendered here (hook annotations, one check per enabled model, nothing when `tests.enabled` is
off, never selected by the chart's own Services) and run here: the Pod's script runs under
/bin/sh with the host's curl against a small HTTP server, so its pass and fail paths are proven
without a cluster. The e2e suite runs the same Pods with `helm test` (tests/e2e/test_stack.py).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading

import pytest

from harness.paths import workload_charts
from harness.render import find, render_chart

HOOK = {"helm.sh/hook": "test", "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}
MODELS = [
    {"modelName": "alpha", "huggingfaceId": "org/alpha", "aliases": ["alpha-alias"]},
    {"modelName": "beta", "huggingfaceId": "org/beta", "healthPath": "/ping"},
    {"modelName": "off", "huggingfaceId": "org/off", "enabled": False},
    {"modelName": "small", "gguf": "small.gguf"},
    {"modelName": "small-off", "gguf": "off.gguf", "enabled": False},
]
RAMALAMA = {"hostPath": {"path": "/srv/models"}}
URL = "http://{}.llm.svc:8080"
# chart -> (extra values, expected (url, health path, model) checks with MODELS)
EXPECTED = {
    "vllm-models": ({}, [(URL.format("vllm-alpha"), "/health", "alpha"), (URL.format("vllm-beta"), "/ping", "beta")]),
    "ramalama-models": (RAMALAMA, [(URL.format("ramalama-small"), "/health", "small")]),
    "api-gateway": ({}, [("http://api-gateway.llm.svc:80", "/healthz", n) for n in ("", "alpha", "beta", "small")]),
    "openwebui": ({}, [("http://test-openwebui.llm.svc:80", "/health", "")]),
}


def hook_pods(manifests: list[dict]) -> list[dict]:
    return [m for m in manifests if "helm.sh/hook" in (m["metadata"].get("annotations") or {})]


def checks(pod: dict) -> list[tuple[str, str, str]]:
    """The (url, health path, model) triples the test container is given."""
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and command[3] == "helm-test", command[:4]
    args = command[4:]
    assert len(args) % 3 == 0, args
    return [tuple(args[i : i + 3]) for i in range(0, len(args), 3)]


def test_every_chart_is_covered():
    assert sorted(EXPECTED) == sorted(c.name for c in workload_charts())


@pytest.mark.parametrize("chart", sorted(EXPECTED))
def test_hook_pod_checks_every_enabled_model(chart):
    extra, expected = EXPECTED[chart]
    pods = hook_pods(render_chart(chart, {"models": MODELS, **extra}))
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    [pod] = pods
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"] == HOOK
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "helm-test"
    assert pod["metadata"]["namespace"] == "llm"
    assert checks(pod) == expected
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    [c] = spec["containers"]
    assert c["image"] == "docker.io/curlimages/curl:8.11.1"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]["memory"]
    assert "set -eu" in c["command"][2]


@pytest.mark.parametrize("chart", sorted(EXPECTED))
def test_tests_disabled_renders_no_hook(chart):
    extra, _ = EXPECTED[chart]
    manifests = render_chart(chart, {"models": MODELS, **extra, "tests": {"enabled": False}})
    assert not hook_pods(manifests)
    assert find(manifests, "Service"), "the chart itself still renders"


@pytest.mark.parametrize("chart", ["vllm-models", "ramalama-models"])
def test_model_chart_without_models_of_its_kind_renders_no_hook(chart):
    mine = "gguf" if chart == "ramalama-models" else "huggingfaceId"
    others = [m for m in MODELS if mine not in m]
    assert not hook_pods(render_chart(chart, {"models": others, **EXPECTED[chart][0]}))


@pytest.mark.parametrize("chart", sorted(EXPECTED))
def test_no_service_of_the_chart_selects_the_test_pod(chart):
    extra, _ = EXPECTED[chart]
    manifests = render_chart(chart, {"models": MODELS, **extra})
    [pod] = hook_pods(manifests)
    labels = pod["metadata"]["labels"]
    for svc in find(manifests, "Service"):
        selector = svc["spec"]["selector"]
        assert not selector.items() <= labels.items(), f"Service {svc['metadata']['name']} selects the test pod"


def test_test_image_is_configurable():
    image = {"repository": "registry.local/tools/curl", "tag": "8.11.1-r0", "pullPolicy": "Always"}
    [pod] = hook_pods(render_chart("openwebui", {"tests": {"image": image}}))
    c = pod["spec"]["containers"][0]
    assert (c["image"], c["imagePullPolicy"]) == ("registry.local/tools/curl:8.11.1-r0", "Always")


def _env(pod: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0].get("env") or []}


def test_gateway_with_auth_sends_the_key_from_a_secret():
    values = {
        "models": MODELS,
        "auth": {"enabled": True, "existingSecret": "keys"},
        "tests": {"apiKeySecret": {"name": "gateway-test-key", "key": "key"}},
    }
    [pod] = hook_pods(render_chart("api-gateway", values))
    assert _env(pod) == {"API_KEY": {"secretKeyRef": {"name": "gateway-test-key", "key": "key"}}}


def test_gateway_with_auth_and_no_key_skips_the_model_list_and_says_why():
    values = {"models": MODELS, "auth": {"enabled": True, "existingSecret": "keys"}}
    [pod] = hook_pods(render_chart("api-gateway", values))
    assert "tests.apiKeySecret.name" in _env(pod)["SKIP_MODELS"]
    assert not _env(hook_pods(render_chart("api-gateway", {"models": MODELS}))[0])  # auth off: nothing to skip


# --- the script itself, run with the host's curl against a fake model server -------------------


class _Server(http.server.BaseHTTPRequestHandler):
    health = 200
    ids: list = []
    key = ""
    chat = 200  # the status of /v1/chat/completions (400: a model without a chat template)

    def do_GET(self):
        if self.path in ("/health", "/healthz"):
            self._send(self.health, b"ok")
        elif self.path == "/v1/models":
            if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
                self._send(401, b'{"error": {"message": "no key"}}')
            else:
                self._send(200, json.dumps({"object": "list", "data": [{"id": i} for i in self.ids]}).encode())
        else:
            self._send(404, b"")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/chat/completions" or body.get("model") not in self.ids:
            self._send(404, b'{"error": {"message": "no such model"}}')
        elif self.chat != 200:
            self._send(self.chat, b'{"error": {"message": "default chat template is no longer allowed"}}')
        else:
            self._send(200, json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode())

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Server.health, _Server.ids, _Server.key, _Server.chat = 200, ["alpha", "alpha-alias"], "", 200
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def run_script(chart: str, values: dict, url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The rendered test container's command, with every URL pointed at `url`."""
    [pod] = hook_pods(render_chart(chart, values))
    command = pod["spec"]["containers"][0]["command"]
    args = [url if i % 3 == 0 else a for i, a in enumerate(command[4:])]
    script = command[2].replace("--retry 5 --retry-delay 2", "--retry 1 --retry-delay 0")  # fail fast here
    return subprocess.run(
        ["sh", "-c", script, "helm-test", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


needs_curl = pytest.mark.usefixtures("shell_tools")
ALPHA = {"models": [MODELS[0]]}


@needs_curl
def test_script_passes_when_healthy_and_listed(server):
    proc = run_script("vllm-models", ALPHA, server)
    assert proc.returncode == 0, proc.stderr
    assert "ok: GET " + server + "/v1/models lists alpha" in proc.stdout
    assert "ok: POST " + server + "/v1/chat/completions answered a chat for alpha" in proc.stdout
    assert proc.stdout.strip().endswith("all checks passed")


@needs_curl
def test_script_fails_when_a_listed_model_cannot_chat(server):
    """Up and listed is not enough: real vLLM serves /health and /v1/models for a model without a
    chat template and answers every chat request 400."""
    _Server.chat = 400
    proc = run_script("vllm-models", ALPHA, server)
    assert proc.returncode != 0
    assert f"FAIL: POST {server}/v1/chat/completions for model alpha answered 400" in proc.stderr, proc.stderr
    assert "default chat template" in proc.stderr, proc.stderr


@needs_curl
def test_script_fails_naming_the_model_when_not_listed(server):
    _Server.ids = ["other"]
    proc = run_script("vllm-models", ALPHA, server)
    assert proc.returncode != 0
    assert f"FAIL: GET {server}/v1/models does not list model alpha" in proc.stderr, proc.stderr


@needs_curl
def test_script_fails_naming_the_url_when_not_healthy(server):
    _Server.health = 500
    proc = run_script("ramalama-models", {"models": [MODELS[3]], **RAMALAMA}, server)
    assert proc.returncode != 0
    assert f"FAIL: GET {server}/health answered 500, not 200 (model small)" in proc.stderr, proc.stderr


@needs_curl
def test_script_sends_the_gateway_key_and_skips_without_one(server):
    _Server.key = "sk-test"
    values = {
        "models": [MODELS[0]],
        "auth": {"enabled": True, "existingSecret": "keys"},
        "tests": {"apiKeySecret": {"name": "k", "key": "key"}},
    }
    assert run_script("api-gateway", values, server, env={"API_KEY": "sk-test"}).returncode == 0
    wrong = run_script("api-gateway", values, server, env={"API_KEY": "sk-wrong"})
    assert wrong.returncode != 0 and "/v1/models failed (model alpha)" in wrong.stderr, wrong.stderr
    assert "sk-wrong" not in wrong.stdout + wrong.stderr
    del values["tests"]
    proc = run_script("api-gateway", values, server, env={"SKIP_MODELS": "no key"})
    assert proc.returncode == 0, proc.stderr
    assert "skip: not checking that GET " + server + "/v1/models lists alpha: no key" in proc.stdout

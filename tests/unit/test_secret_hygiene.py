"""No Secret value lands in a ConfigMap, an annotation, a label or a log line.

The charts take secrets only as existing Secrets (name + key), so a secret value can reach a
rendered object only through values. These tests render every chart with secret-looking
canaries in every value that takes free text (env, args, URLs, secret references) and scan
every ConfigMap, Secret, annotation and label; they check that the slots meant for secrets
refuse plain values; and they run the one script that handles a token (ramalama-models'
fetch.sh) to prove the token never reaches its log. The gateway's own logs are covered by
tests/gateway (test_auth.py, test_reliability_hostile.py).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from harness.paths import CHARTS, REPO, application_charts, workload_charts
from harness.render import HelmError, find, render_chart

CANARY = "sk-canary-5f0c2a9e81d34b7c"
HF_CANARY = "hf_CanaryToken0123456789abcdefXYZ"
DB_CANARY = "postgresql://app:canary-db-pass-77@db:5432/webui"
CANARIES = (CANARY, HF_CANARY, "canary-db-pass-77")


def leaks(manifests: list[dict]) -> list[str]:
    """Where a canary appears in a ConfigMap, a Secret, an annotation or a label."""
    found = []

    def scan(where: str, obj) -> None:
        text = json.dumps(obj)
        for c in CANARIES:
            if c in text:
                found.append(f"{where} holds {c!r}")

    for m in manifests:
        name = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] in ("ConfigMap", "Secret"):
            scan(name, {k: m.get(k) for k in ("data", "binaryData", "stringData")})
        scan(f"{name} metadata", {k: m["metadata"].get(k) for k in ("annotations", "labels")})
        tpl = ((m.get("spec") or {}).get("template") or {}).get("metadata") or {}
        scan(f"{name} pod template metadata", {k: tpl.get(k) for k in ("annotations", "labels")})
    return found


def env_canaries() -> list[dict]:
    # Names no chart treats as a secret (those are refused, see below): free text that must stay put.
    return [{"name": "EXTRA_SETTING", "value": CANARY}, {"name": "UPSTREAM_HINT", "value": DB_CANARY}]


# Every chart with canaries in every free-text value it has; accepted values must not leak.
OVERLAYS = {
    "api-gateway": {
        "models": [{"modelName": "alpha", "huggingfaceId": "org/alpha"}],
        "auth": {"enabled": True, "existingSecret": "gateway-keys-" + CANARY, "secretKey": "api-keys.json"},
    },
    "vllm-models": {
        "models": [
            {
                "modelName": "alpha",
                "huggingfaceId": "org/alpha",
                "env": env_canaries(),
                "extraArgs": ["--api-key", CANARY],
                "hfToken": {"secretName": "hf-" + CANARY, "key": "token"},
            }
        ],
    },
    "ramalama-models": {
        "fetch": {"enabled": True, "tokenSecret": {"name": "hf-" + CANARY, "key": "token"}},
        "models": [
            {
                "modelName": "alpha",
                "gguf": "alpha.gguf",
                "env": env_canaries(),
                "extraArgs": ["--api-key", CANARY],
                "url": "https://models.example/alpha.gguf",
            }
        ],
    },
    "openwebui": {
        "extraEnv": env_canaries(),
        "gateway": {"apiKey": {"existingSecret": "gw-" + CANARY, "key": "key"}},
        "secretKey": {"existingSecret": "webui-" + CANARY, "key": "key"},
        "redis": {"existingSecret": "redis-" + CANARY, "key": "url"},
        "externalDatabase": {"existingSecret": "db-" + CANARY, "key": "url"},
    },
}


def test_every_chart_has_a_canary_overlay():
    assert set(OVERLAYS) == {c.name for c in workload_charts()}


@pytest.mark.parametrize("chart", sorted(OVERLAYS))
def test_canaries_never_reach_configmaps_annotations_or_labels(chart):
    try:
        manifests = render_chart(chart, OVERLAYS[chart])
    except HelmError as exc:  # the overlay itself must render: it only uses accepted slots
        pytest.fail(f"{chart} refused the canary overlay:\n{exc.stderr}")
    text = json.dumps(manifests)
    assert CANARY in text, "the overlay did not reach the manifests: the scan would prove nothing"
    assert not leaks(manifests), leaks(manifests)


@pytest.mark.parametrize("chart", [c.name for c in workload_charts()])
def test_charts_render_no_secret_objects(chart):
    # Secrets come from existing ones only: a rendered Secret would hold a value from values.yaml
    # (or one generated per render, which Argo CD shows as drift forever).
    for values in [None, *sorted((CHARTS / chart / "ci").glob("*-values.yaml"))]:
        files = [REPO / "models.yaml"] if values is None else [values]
        manifests = render_chart(chart, values_files=files)
        assert not find(manifests, "Secret"), f"{chart} ({values}) renders a Secret"
        assert not leaks(manifests)


def test_no_template_reads_secrets_at_render_time():
    # `lookup` could copy a live Secret into a ConfigMap or annotation (and breaks GitOps diffs).
    for chart in application_charts():
        for tpl in (chart / "templates").rglob("*"):
            if tpl.is_file():
                assert "lookup" not in tpl.read_text(), f"{tpl.relative_to(REPO)} uses lookup"


def test_secret_references_stay_references():
    # Every env var fed from one of the canary Secret names is a secretKeyRef, never a value.
    for chart, overlay in OVERLAYS.items():
        for d in find(render_chart(chart, overlay), "Deployment"):
            pod = d["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                for env in c.get("env") or []:
                    if CANARY in json.dumps(env.get("valueFrom") or {}):
                        assert "secretKeyRef" in env["valueFrom"], (chart, env)
                for vol in pod.get("volumes") or []:
                    if CANARY in json.dumps(vol):
                        assert "secret" in vol, (chart, vol)


# --- slots meant for secrets refuse plain values ------------------------------------------------

REFUSED = {
    "vllm-models: HF_TOKEN as a plain env value": (
        "vllm-models",
        {"models": [{"modelName": "a", "huggingfaceId": "o/a", "env": [{"name": "HF_TOKEN", "value": HF_CANARY}]}]},
        "HF_TOKEN",
    ),
    "vllm-models: hfToken as a string": (
        "vllm-models",
        {"models": [{"modelName": "a", "huggingfaceId": "o/a", "hfToken": HF_CANARY}]},
        "hfToken",
    ),
    "vllm-models: defaults.hfToken.value": ("vllm-models", {"defaults": {"hfToken": {"value": HF_CANARY}}}, "hfToken"),
    "openwebui: secretKey.value": ("openwebui", {"secretKey": {"value": CANARY}}, "secretKey"),
    "openwebui: gateway.apiKey.value": ("openwebui", {"gateway": {"apiKey": {"value": CANARY}}}, "apiKey"),
    "openwebui: externalDatabase.url": ("openwebui", {"externalDatabase": {"url": DB_CANARY}}, "externalDatabase"),
    "api-gateway: auth.keys inline": (
        "api-gateway",
        {"auth": {"enabled": True, "keys": [{"name": "a", "key": CANARY}]}},
        "keys",
    ),
    "ramalama-models: fetch.tokenSecret.value": (
        "ramalama-models",
        {"fetch": {"tokenSecret": {"value": HF_CANARY}}},
        "tokenSecret",
    ),
}

# Plain values under env names that are secrets by definition (openwebui's were accepted until these tests).
SECRET_ENV = [
    (
        "vllm-models",
        "models[0].env",
        "HF_TOKEN",
        {"models": [{"modelName": "a", "huggingfaceId": "o/a", "env": [{"name": "HF_TOKEN", "value": HF_CANARY}]}]},
    ),
    (
        "ramalama-models",
        "models[0].env",
        "HF_TOKEN",
        {"models": [{"modelName": "a", "gguf": "a.gguf", "env": [{"name": "HF_TOKEN", "value": HF_CANARY}]}]},
    ),
    (
        "ramalama-models",
        "defaults.env",
        "HF_TOKEN",
        {
            "defaults": {"env": [{"name": "HF_TOKEN", "value": HF_CANARY}]},
            "models": [{"modelName": "a", "gguf": "a.gguf"}],
        },
    ),
    ("openwebui", "extraEnv", "WEBUI_SECRET_KEY", {"extraEnv": [{"name": "WEBUI_SECRET_KEY", "value": CANARY}]}),
    ("openwebui", "extraEnv", "OPENAI_API_KEYS", {"extraEnv": [{"name": "OPENAI_API_KEYS", "value": CANARY}]}),
    ("openwebui", "extraEnv", "DATABASE_URL", {"extraEnv": [{"name": "DATABASE_URL", "value": DB_CANARY}]}),
]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_secret_slots_refuse_plain_values(case):
    chart, values, named = REFUSED[case]
    with pytest.raises(HelmError) as exc:
        render_chart(chart, values)
    assert named in exc.value.stderr, exc.value.stderr
    for c in CANARIES:
        assert c not in exc.value.stderr, f"the error message repeats the secret: {exc.value.stderr}"


@pytest.mark.parametrize("chart,path,name,values", SECRET_ENV)
def test_secret_env_names_refuse_plain_values(chart, path, name, values):
    with pytest.raises(HelmError) as exc:
        render_chart(chart, values)
    assert name in exc.value.stderr, exc.value.stderr


# --- the fetch script never logs its token -------------------------------------------------------

FETCH = CHARTS / "ramalama-models" / "files" / "fetch.sh"
BODY = b"GGUF-fake-model-bytes"


class _Server(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        _Server.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {HF_CANARY}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture()
def model_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Server.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _no_curl_path(tmp_path: Path) -> str:
    """A PATH with what fetch.sh needs except curl (its python3 branch)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))  # not a pyenv shim
    for tool in ("sh", "mkdir", "dirname", "rm", "mv", "wc", "sha256sum", "cat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(os.path.realpath(found))
    return str(bin_dir)


@pytest.mark.parametrize("client", ["curl", "python3"])
@pytest.mark.parametrize("token_ok", [True, False], ids=["download", "refused"])
def test_fetch_script_never_logs_the_token(tmp_path, model_server, client, token_ok):
    if client == "curl" and not shutil.which("curl"):
        # Fail, never skip: fetch.sh's curl branch is the one the images use.
        pytest.fail("curl is not installed; the curl branch of fetch.sh cannot be tested (apt-get install curl)")
    env = {
        "PATH": os.environ["PATH"] if client == "curl" else _no_curl_path(tmp_path),
        "MODEL_PATH": str(tmp_path / "models" / "m.gguf"),
        "MODEL_URL": model_server + "/m.gguf",
        "FETCH_TIMEOUT": "20",
        "POD_NAME": "pod-0",
        "FETCH_TOKEN": HF_CANARY if token_ok else HF_CANARY[:-1] + "Q",
    }
    proc = subprocess.run(["sh", str(FETCH)], env=env, capture_output=True, text=True, timeout=60)
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) is token_ok, log
    assert _Server.seen and _Server.seen[0].startswith("Bearer "), "the token was not sent"
    if token_ok:
        assert (tmp_path / "models" / "m.gguf").read_bytes() == BODY
    assert HF_CANARY not in log and HF_CANARY[:-1] not in log and HF_CANARY[3:20] not in log, log


# Found by this test (fetch.sh printed the whole URL); ramalama-models now refuses such URLs.
@pytest.mark.parametrize(
    "url",
    [f"https://u:{CANARY}@models.example/a.gguf", f"https://models.example/a.gguf?token={CANARY}"],
    ids=["userinfo", "query"],
)
def test_a_credential_in_the_fetch_url_is_refused_or_never_logged(tmp_path, url):
    values = {"fetch": {"enabled": True}, "models": [{"modelName": "a", "gguf": "a.gguf", "url": url}]}
    try:
        render_chart("ramalama-models", values)
    except HelmError as exc:
        assert "url" in exc.stderr
        return
    env = {
        "PATH": os.environ["PATH"],
        "MODEL_PATH": str(tmp_path / "m.gguf"),
        "FETCH_TIMEOUT": "2",
        "MODEL_URL": url.replace("models.example", "127.0.0.1:9"),
    }
    proc = subprocess.run(["sh", str(FETCH)], env=env, capture_output=True, text=True, timeout=60)
    assert CANARY not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_fetch_token_reaches_the_init_container_only_as_a_secret_ref():
    manifests = render_chart(
        "ramalama-models", yaml.safe_load((CHARTS / "ramalama-models" / "ci" / "fetch-values.yaml").read_text())
    )
    for d in find(manifests, "Deployment"):
        for c in d["spec"]["template"]["spec"].get("initContainers") or []:
            token = [e for e in c.get("env") or [] if e["name"] == "FETCH_TOKEN"]
            assert token and token[0].get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "hf-token", c
            assert "value" not in token[0]

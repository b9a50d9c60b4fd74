"""LoRA adapters on the real engines: the command lines the model charts render from their
ci/lora-values.yaml, started the way test_engines.py starts every rendered command line (vLLM
for CPUs in docker, Debian's llama-server on this host), with tiny adapters the tests make
(tools/tinymodels.py, shaped for the stand-in models; engines.adapter_stand_ins puts them where
the pod would have them: the Hugging Face cache, a directory in the cache PVC, a node path).

vLLM must list every adapter with its base model as `parent` and, as `root`, exactly the
`source` that model-catalog.routes gives the api-gateway, and answer a chat under each
adapter's own name. llama-server must load every adapter (`applyAdapters: false`: switched off)
and answer a request that turns one on with `lora`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from e2e import engines
from e2e.test_engines import _llama, _vllm, _wait_health, vllm_image  # noqa: F401  (vllm_image: a fixture)
from harness.render import render_chart

REPO = Path(__file__).resolve().parents[2]
LORA = {s.engine: s for s in engines.rendered_servers() if s.source.endswith("/lora-values.yaml")}


def _chat(url: str, model: str, **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=300)


def _catalog_adapters(chart: str) -> dict[str, list[dict]]:
    """What model-catalog.routes (the api-gateway's routing table) says of each model's adapters,
    for the same values: rendered through the library's test probe chart."""
    import yaml

    values = yaml.safe_load((REPO / "charts" / chart / "ci" / "lora-values.yaml").read_text())
    call = {"name": "out", "helper": "model-catalog.routes", "arg": {"models": values["models"], "namespace": "x"}}
    docs = render_chart(REPO / "tests" / "fixtures" / "model-catalog-probe", {"calls": [call]})
    routes = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["out"])["routes"]
    return {r["name"]: r["adapters"] for r in routes}


def test_both_model_charts_ship_a_lora_case():
    assert set(LORA) == {"vllm", "llama-server"}, sorted(LORA)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="llm-charts-lora-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_vllm_answers_each_adapter_under_its_own_name(vllm_image, workdir):  # noqa: F811
    server = LORA["vllm"]
    modules = [json.loads(a) for a in server.args[server.args.index("--lora-modules") + 1 :] if a.startswith("{")]
    assert len(modules) == 3, modules  # one per source: the hub, the cache PVC, the node
    with _vllm(server, vllm_image, workdir) as (url, scaled, alive, logs):
        try:
            _wait_health(url, alive, 900)
            listed = {m["id"]: m for m in requests.get(f"{url}/v1/models", timeout=30).json()["data"]}
            answers = {m["name"]: _chat(url, m["name"]) for m in modules}
            unknown = _chat(url, "no-such-adapter")
        except (RuntimeError, TimeoutError, requests.RequestException) as exc:
            pytest.fail(f"{server.id}: {exc}\nchanged for this host: {scaled.changes}\nlog:\n{logs()}")
    # The contract with the api-gateway: the catalog's `source` of each adapter is what vLLM
    # itself shows as `root`, so the gateway's /v1/models says the same as the engine's.
    catalog = {a["name"]: a["source"] for a in _catalog_adapters("vllm-models")[server.model]}
    assert set(catalog) == {m["name"] for m in modules}
    for m in modules:
        assert listed[m["name"]]["parent"] == server.model, listed
        assert listed[m["name"]]["root"] == m["path"] == catalog[m["name"]], listed
        resp = answers[m["name"]]
        assert resp.status_code == 200, f"{m['name']}: {resp.status_code} {resp.text[:300]}"
        assert resp.json()["model"] == m["name"]
    assert unknown.status_code == 404, unknown.text[:300]


def test_llama_server_loads_each_adapter_and_a_request_turns_one_on(workdir):
    server = LORA["llama-server"]
    files = [f.rsplit(":", 1)[0] for f in engines.flag_value(server.args, "--lora-scaled").split(",")]
    assert len(files) == 2, server.args  # applyAdapters: false, so every adapter at scale 0
    with _llama(server, workdir) as (url, scaled, alive, logs):
        try:
            _wait_health(url, alive, 120)
            loaded = requests.get(f"{url}/lora-adapters", timeout=30).json()
            on = _chat(url, "tinyllama-sql", lora=[{"id": 0, "scale": 1.0}])
            by_name = _chat(url, "tinyllama-chat")
        except (RuntimeError, TimeoutError, requests.RequestException) as exc:
            pytest.fail(f"{server.id}: {exc}\nchanged for this host: {scaled.changes}\nlog:\n{logs()}")
    assert [a["id"] for a in loaded] == [0, 1], loaded
    assert [Path(a["path"]).name for a in loaded] == [Path(f).name for f in files], loaded
    assert all(a["scale"] == 0.0 for a in loaded), loaded  # applyAdapters: false: off until a request says
    assert on.status_code == 200, on.text[:300]
    # llama-server answers any name, the adapter's too, with the model's own alias.
    assert by_name.status_code == 200 and by_name.json()["model"] == server.model, by_name.text[:300]

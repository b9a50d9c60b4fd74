"""The e2e tooling itself, without a cluster: provider choice, image tags, the CPU model list, the
build locks, the pause archive, the local cluster's address settings, the tiny models, the engine flag checks.
Fast; they use no fixture that starts anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import progress
import pytest
from localcluster import containerd
from stack import images, models, providers
from stack.images import Image

from e2e import engines

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("LLM_CHARTS_KUBECONFIG", "LLM_CHARTS_KUBE_CONTEXT", "LLM_CHARTS_PROVIDER"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_an_existing_cluster_named_by_the_user_comes_first(clean_env, tmp_path):
    clean_env.setattr(providers.KindCluster, "available", staticmethod(lambda: True))
    chosen = providers.select(kubeconfig=str(tmp_path / "kc"), context="ctx")
    assert chosen.provider == "existing"
    assert chosen.kubectl_args() == [f"--kubeconfig={tmp_path / 'kc'}", "--context=ctx"]
    assert chosen.kube_args() == [f"--kubeconfig={tmp_path / 'kc'}", "--kube-context=ctx"]
    clean_env.setenv("LLM_CHARTS_KUBE_CONTEXT", "other")
    assert providers.select().provider == "existing"


def test_kind_when_available_else_the_local_cluster(clean_env):
    clean_env.setattr(providers.KindCluster, "available", staticmethod(lambda: True))
    assert providers.select().provider == "kind"
    clean_env.setattr(providers.KindCluster, "available", staticmethod(lambda: False))
    assert providers.select().provider == "local"
    clean_env.setenv("LLM_CHARTS_PROVIDER", "nonsense")
    with pytest.raises(ValueError, match="existing, kind or local"):
        providers.select()


def test_image_tags_follow_the_build_inputs_and_the_base(tmp_path, monkeypatch):
    base, child = tmp_path / "base", tmp_path / "child"
    for d in (base, child):
        d.mkdir()
        (d / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (child / "README.md").write_text("docs\n")
    monkeypatch.setitem(images.IMAGES, "probe-base", Image("probe-base", "debian:bookworm-slim", path=base))
    monkeypatch.setitem(images.IMAGES, "probe", Image("probe", "probe-base", path=child))
    first = images.image_ref("probe")
    assert first.startswith("llm-charts/probe:e2e-") and "latest" not in first
    (child / "README.md").write_text("other docs\n")
    (child / "values.yaml").write_text("a: 1\n")
    assert images.image_ref("probe") == first, "docs and values files are not build inputs"
    (base / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert images.image_ref("probe") != first, "a changed base must rebuild the images on top of it"


def test_every_image_builds_from_a_dockerfile_of_the_repository():
    for name, image in images.IMAGES.items():
        dockerfile = (image.context / "Dockerfile").read_text()
        base = images.IMAGES[image.base] if image.base in images.IMAGES else None
        if base:
            assert "FROM ${BASE}" in dockerfile, name
        else:
            assert f"FROM {image.base}" in dockerfile and image.base in images.DEBIAN_BASES, name


def test_the_build_ca_bundle_setting_names_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_CHARTS_BUILD_CA_BUNDLE", str(tmp_path / "nope.pem"))
    with pytest.raises(images.ImageError, match="LLM_CHARTS_BUILD_CA_BUNDLE"):
        images.build_ca_bundle()
    (tmp_path / "ca.pem").write_text("pem")
    monkeypatch.setenv("LLM_CHARTS_BUILD_CA_BUNDLE", str(tmp_path / "ca.pem"))
    assert images.build_ca_bundle() == tmp_path / "ca.pem"


def test_the_stack_catalog_is_the_repository_models_yaml_on_cpu():
    import yaml

    shipped = yaml.safe_load((REPO / "models.yaml").read_text())["models"]
    catalog = models.catalog()["models"]
    assert [m["modelName"] for m in catalog] == [m["modelName"] for m in shipped]
    assert all(m["gpuRequestCount"] == 0 for m in catalog)
    assert sum("gguf" in m for m in catalog) >= 1 and sum("gguf" not in m for m in catalog) >= 1
    without_vllm = models.catalog(vllm=False)
    assert models.enabled(without_vllm) == [m for m in without_vllm["models"] if "gguf" in m]
    added = models.catalog([{"modelName": "x", "huggingfaceId": "a/b"}])["models"][-1]
    assert added["modelName"] == "x" and added["gpuRequestCount"] == 0


def test_a_second_builder_waits_for_the_first_and_finds_its_result(tmp_path):
    # .ci/run's prebuild and the e2e are two processes building the same things.
    target = tmp_path / "program"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, progress, pathlib; t = pathlib.Path(sys.argv[1])\n"
            "with progress.exclusive(t, 'program'):\n"
            "    print('building', flush=True); sys.stdin.readline(); t.write_text('built')",
            str(target),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(TOOLS)),
    )
    assert first.stdout.readline() == "building\n"
    seen = []

    def second():
        with progress.exclusive(target, "program"):
            seen.append(target.read_text() if target.exists() else None)

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and seen == [], "the second builder did not wait for the first"
    first.communicate("done\n", timeout=30)
    waiter.join(30)
    assert seen == ["built"]


def test_pause_archive_is_a_loadable_docker_archive(tmp_path):
    out = tmp_path / "img.tar"
    containerd.write_docker_archive(out, "registry.k8s.io/pause:test", {"pause": b"\x7fELF"}, ["/pause"])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        layer = tarfile.open(fileobj=tar.extractfile("layer.tar"))
        assert layer.getnames() == ["pause"]
    assert manifest[0]["RepoTags"] == ["registry.k8s.io/pause:test"]
    assert config["config"]["Entrypoint"] == ["/pause"] and config["rootfs"]["diff_ids"][0].startswith("sha256:")


@pytest.mark.parametrize(
    ("ref", "stored"),
    [
        ("busybox:1", "docker.io/library/busybox:1"),
        ("llm-charts/gateway:e2e-1", "docker.io/llm-charts/gateway:e2e-1"),
        ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10.1"),
        ("localhost/x:1", "localhost/x:1"),
    ],
)
def test_image_names_as_containerd_stores_them(ref, stored):
    assert containerd.normalize(ref) == stored


def _settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import json, localcluster.settings as s; print(json.dumps([s.network(), s.NODE_IP, s.API_SERVICE_IP, s.DNS_SERVICE_IP]))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CHARTS_") or k == "LLM_CHARTS_CACHE"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=TOOLS,
        env={**clean, **env, "PYTHONPATH": str(TOOLS)},
    )


def test_the_cluster_address_ranges_default_to_the_benchmark_test_network():
    import ipaddress

    proc = _settings({})
    assert proc.returncode == 0, proc.stderr
    ranges, node, api, dns = json.loads(proc.stdout)
    reserved = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544
    for net in ranges.values():
        assert ipaddress.ip_network(net).subnet_of(reserved), ranges
    assert ipaddress.ip_address(node) in ipaddress.ip_network(ranges["node"])
    assert ipaddress.ip_address(api) in ipaddress.ip_network(ranges["services"])
    assert ipaddress.ip_address(dns) in ipaddress.ip_network(ranges["services"])


def test_the_cluster_address_ranges_are_settings():
    proc = _settings(
        {
            "LLM_CHARTS_NODE_CIDR": "10.99.0.0/24",
            "LLM_CHARTS_POD_CIDR": "10.98.0.0/16",
            "LLM_CHARTS_SERVICE_CIDR": "10.97.0.0/16",
        }
    )
    assert proc.returncode == 0, proc.stderr
    ranges, node, api, dns = json.loads(proc.stdout)
    assert ranges == {"node": "10.99.0.0/24", "pods": "10.98.0.0/16", "services": "10.97.0.0/16"}
    assert (node, api, dns) == ("10.99.0.1", "10.97.0.1", "10.97.0.10")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLM_CHARTS_POD_CIDR": "198.18.128.0/33"}, "LLM_CHARTS_POD_CIDR='198.18.128.0/33' is not an IPv4 network"),
        ({"LLM_CHARTS_POD_CIDR": "198.19.0.0/20"}, "overlaps LLM_CHARTS_SERVICE_CIDR"),
        ({"LLM_CHARTS_SERVICE_CIDR": "198.19.0.0/8"}, "is not an IPv4 network"),
        ({"LLM_CHARTS_POD_CIDR": "198.18.128.0/26"}, "too small"),
    ],
)
def test_bad_address_ranges_are_refused_with_the_setting_named(env, message):
    proc = _settings(env)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_the_tiny_gguf_is_a_llama_model_with_a_chat_template(tmp_path):
    import gguf
    import tinymodels

    path = tinymodels.write_gguf(tmp_path / "m.gguf")
    again = tinymodels.write_gguf(tmp_path / "n.gguf")
    assert path.read_bytes() == again.read_bytes(), "the writer is deterministic"
    reader = gguf.GGUFReader(str(path))

    def field(name):
        f = reader.fields[name]
        return f.parts[f.data[0]]

    assert bytes(field("general.architecture")).decode() == "llama"
    assert "<|im_start|>" in bytes(field("tokenizer.chat_template")).decode()
    assert int(field("llama.block_count")[0]) == 2 and int(field("llama.embedding_length")[0]) == 64
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"} <= names
    assert len(reader.tensors) == 3 + 2 * 9
    assert 0.3e6 < path.stat().st_size < 1e6


def test_the_tiny_hf_llama_is_laid_out_as_a_hub_download(tmp_path):
    import tinymodels
    from tokenizers import Tokenizer

    snapshot = tinymodels.write_hf_llama(tmp_path / "hf", "org/tiny")
    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        link = snapshot / f
        assert link.is_symlink() and link.resolve().parent == (repo / "blobs").resolve(), f
    config = json.loads((snapshot / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32
    assert "chat_template" in json.loads((snapshot / "tokenizer_config.json").read_text())
    tok = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    text = "héllo <|im_end|>"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    base = tinymodels.hf_llama_files(chat_template=None)
    assert "chat_template" not in json.loads(base["tokenizer_config.json"])
    with pytest.raises(ValueError, match="head size 16"):
        tinymodels.hf_llama_files(width=64, heads=4)


def test_sglang_flags_come_from_its_parser_with_argparse_prefixes(tmp_path_factory):
    spec = engines.sglang_flags(tmp_path_factory.getbasetemp().parent / "sglang-wheel")
    assert spec.problems(["--model-path", "a/b", "--tp", "2", "--enable-metrics", "--host", "0.0.0.0"]) == []
    assert spec.resolve("--tp") == "--tp-size"
    assert spec.problems(["--no-such-flag", "1"])[0].startswith("--no-such-flag: not an option")
    assert spec.problems(["--port"]) == ["--port: expects a value"]


def test_tei_refuses_a_vllm_flag():
    assert engines.TEI.problems(["--model-id", "BAAI/bge-small-en-v1.5", "--port", "8000"]) == []
    problems = engines.TEI.problems(["--model-id", "x", "--enable-prefix-caching"])
    assert problems and "--enable-prefix-caching: not an option" in problems[0]


def test_a_command_line_rendered_twice_is_started_once_and_no_other():
    def server(deployment="vllm-a", args=("--model", "org/m", "--port", "8000"), **kw):
        fields = dict(engine="vllm", image="vllm/vllm-openai:v0", command=["vllm", "serve"], env={}, model="a")
        fields.update(kw)
        return engines.Server("vllm-models/x.yaml", deployment, args=list(args), **fields)

    key = engines.start_key(server())
    # Another values file or deployment name, the port (free per start): the same start.
    assert engines.start_key(server(deployment="vllm-b")) == key
    assert engines.start_key(server(args=("--model", "org/m", "--port", "9000"))) == key
    # Anything the process sees is another start.
    for other in (
        server(args=("--model", "org/other", "--port", "8000")),
        server(args=("--model", "org/m", "--port", "8000", "--enforce-eager")),
        server(env={"HF_HOME": "/data"}),
        server(model="b"),
        server(files={"/templates": {"chat.jinja": b"{{ x }}"}}),
        server(image="vllm/vllm-openai:v1"),
    ):
        assert engines.start_key(other) != key, other
    # llama-server's model file is the stand-in GGUF, whatever was rendered.
    gguf = dict(engine="llama-server", image="ramalama", command=["llama-server"])
    assert engines.start_key(server(args=("--model", "/m/a.gguf"), **gguf)) == engines.start_key(
        server(args=("--model", "/m/b.gguf"), **gguf)
    )

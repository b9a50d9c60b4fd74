"""The e2e tooling itself, without a cluster: provider choice, image tags, the CPU model list,
the pause image archive. Fast; they use no fixture that starts anything."""
from __future__ import annotations

import json
import tarfile

import pytest

from e2e import images, localcluster, providers
from e2e.stack import e2e_models


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


def test_image_tags_follow_the_build_inputs_only(tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (tmp_path / "README.md").write_text("docs\n")
    monkeypatch.setitem(images.IMAGES, "probe", tmp_path)
    first = images.image_ref("probe")
    assert first.startswith("llm-charts/probe:e2e-") and "latest" not in first
    (tmp_path / "README.md").write_text("other docs\n")
    (tmp_path / "values.yaml").write_text("a: 1\n")
    assert images.image_ref("probe") == first
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert images.image_ref("probe") != first


def test_the_e2e_models_are_the_repository_catalog_on_cpu():
    models = e2e_models()["models"]
    assert {m["modelName"] for m in models} >= {"qwen2-5-0-5b-instruct", "qwen2-5-1-5b-instruct", "tinyllama-gguf"}
    assert all(m["gpuRequestCount"] == 0 for m in models)
    assert sum("gguf" in m for m in models) >= 1 and sum("gguf" not in m for m in models) >= 2
    added = e2e_models([{"modelName": "x", "huggingfaceId": "a/b"}])["models"][-1]
    assert added["modelName"] == "x" and added["gpuRequestCount"] == 0


def test_pause_archive_is_a_loadable_docker_archive(tmp_path):
    out = tmp_path / "img.tar"
    localcluster.write_docker_archive(out, "registry.k8s.io/pause:test", {"pause": b"\x7fELF"}, ["/pause"])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        layer = tarfile.open(fileobj=tar.extractfile("layer.tar"))
        assert layer.getnames() == ["pause"]
    assert manifest[0]["RepoTags"] == ["registry.k8s.io/pause:test"]
    assert config["config"]["Entrypoint"] == ["/pause"] and config["rootfs"]["diff_ids"][0].startswith("sha256:")


@pytest.mark.parametrize(("ref", "stored"), [
    ("busybox:1", "docker.io/library/busybox:1"),
    ("llm-charts/gateway:e2e-1", "docker.io/llm-charts/gateway:e2e-1"),
    ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10.1"),
    ("localhost/x:1", "localhost/x:1"),
])
def test_image_names_as_containerd_stores_them(ref, stored):
    assert localcluster.normalize_image(ref) == stored

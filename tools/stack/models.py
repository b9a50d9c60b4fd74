"""The stack's model list and the tiny models that stand in for the real weights.

The list is the repository's models.yaml, made runnable on a CPU-only machine: no GPUs, small
caches. The weights of a real model are out of reach here (no Hugging Face hub, and no room
for gigabytes), so each entry is served by a tiny random-weight model of the same kind, under
the entry's own name: a GGUF written under its `gguf` file name, a Hugging Face Llama laid out
in the cache as its `huggingfaceId`. The charts' rendered command lines stay untouched.
"""

from __future__ import annotations

import copy
import io
import sys
import tarfile
from pathlib import Path

import yaml

_TOOLS = Path(__file__).resolve().parents[1]
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))

REPO = _TOOLS.parent
# Real repositories whose tokenizer has no chat template: their stand-in has none either, so
# a chart that does not supply one (`--chat-template`) fails as it would with the real model.
NO_CHAT_TEMPLATE = {
    "microsoft/DialoGPT-medium",
    "microsoft/DialoGPT-small",
    "microsoft/DialoGPT-large",
    "gpt2",
    "openai-community/gpt2",
}


def catalog(extra: list[dict] | tuple[dict, ...] = (), *, vllm: bool = True) -> dict:
    """models.yaml for a CPU-only cluster (gpuRequestCount 0, 1Gi caches), plus `extra` entries;
    with vllm=False the repository's vLLM entries are disabled (the demo without its big image);
    `extra` entries stay as given (an `openai` engine entry needs no vLLM image)."""
    doc = yaml.safe_load((REPO / "models.yaml").read_text())
    models = []
    shipped = len(doc["models"])
    for i, m in enumerate([*doc["models"], *extra]):
        m = copy.deepcopy(m)
        m["gpuRequestCount"] = 0
        if "gguf" not in m:
            m["pvcSize"] = "1Gi"
            if not vllm and i < shipped:
                m["enabled"] = False
        models.append(m)
    return {"models": models, "global": doc.get("global", {})}


def enabled(doc: dict, kind: str | None = None) -> list[dict]:
    """Enabled entries, of one kind (`gguf` or `vllm`) when given."""
    out = [m for m in doc["models"] if m.get("enabled") is not False]
    if kind == "gguf":
        return [m for m in out if "gguf" in m]
    if kind == "vllm":
        return [m for m in out if "gguf" not in m]
    return out


def gguf_for(entry: dict) -> bytes:
    """The stand-in GGUF of an entry (default tiny shape, chat template included)."""
    import tempfile

    import tinymodels  # numpy and gguf: only where models are written

    with tempfile.TemporaryDirectory() as tmp:
        # A neutral general.name: llama.cpp special-cases some model names (Phi-3 expects <|end|>).
        return tinymodels.write_gguf(Path(tmp) / "m.gguf").read_bytes()


def hf_files_for(entry: dict) -> dict[str, bytes]:
    import tinymodels

    repo = entry["huggingfaceId"]
    template = None if repo in NO_CHAT_TEMPLATE else tinymodels.CHAT_TEMPLATE
    return tinymodels.hf_llama_files(chat_template=template)


def hf_cache_tar(entry: dict, hf_home: str = "huggingface") -> bytes:
    """A tar of the entry's stand-in in the Hugging Face cache layout, relative to the cache PVC's
    root (the chart's HF_HOME is /data/huggingface on the PVC mounted at /data)."""
    import tempfile

    import tinymodels

    with tempfile.TemporaryDirectory() as tmp:
        tinymodels.write_hf_cache(Path(tmp) / hf_home, entry["huggingfaceId"], hf_files_for(entry))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(Path(tmp) / hf_home, arcname=hf_home)
        return buf.getvalue()


def files_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

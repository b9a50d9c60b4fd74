"""The engine command lines the model charts render, and how to start one with the real engine.

`rendered_servers()` renders vllm-models and ramalama-models from the shipped models.yaml and
from each ci/*-values.yaml and returns every model server container: its engine, command,
arguments and plain environment. `scaled()` turns one into a command that runs on this host
with a tiny stand-in model: only what this machine cannot do is changed, and every change is
listed in `Server.changes`.

Engines that do not run here (SGLang, TEI, TGI) are checked against their documented flags
(FLAGS, each with its source), the way their own parsers read them.
"""

from __future__ import annotations

import ast
import base64
import functools
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.render import render_chart

REPO = paths.REPO
MODEL_CHARTS = ("vllm-models", "ramalama-models")
STAND_IN_CONTEXT = 512  # tinymodels' default context


@dataclass
class Server:
    source: str  # "<chart>/<values file>"
    deployment: str
    engine: str  # vllm, sglang, openai (image named below), llama-server
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    model: str  # the served model name (modelName)
    changes: list[str] = field(default_factory=list)
    # Files the chart mounts from its own ConfigMaps (a chat template), and tiny stand-ins of the
    # LoRA adapters its command line loads (adapter_stand_ins): mount path -> {relative name: bytes}.
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.deployment}"


def _sources() -> list[tuple[str, list[Path]]]:
    out = []
    for chart in MODEL_CHARTS:
        out.append((f"{chart}/models.yaml", chart, [REPO / "models.yaml"]))
        for values in sorted((paths.CHARTS / chart / "ci").glob("*-values.yaml")):
            out.append((f"{chart}/{values.name}", chart, [values]))
    return [(label, chart, files) for label, chart, files in out]


@functools.cache
def rendered_servers() -> tuple[Server, ...]:
    servers = []
    for label, chart, files in _sources():
        docs = render_chart(paths.CHARTS / chart, values_files=files)
        config_maps = {
            d["metadata"]["name"]: {
                **{k: v.encode() for k, v in (d.get("data") or {}).items()},
                **{k: base64.b64decode(v) for k, v in (d.get("binaryData") or {}).items()},
            }
            for d in docs
            if d.get("kind") == "ConfigMap"
        }
        for doc in docs:
            if doc.get("kind") != "Deployment":
                continue
            labels = doc["metadata"].get("labels", {})
            pod = doc["spec"]["template"]["spec"]
            container = pod["containers"][0]
            engine = "llama-server" if chart == "ramalama-models" else labels.get("llm-stack/engine", "vllm")
            env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
            # The chart's own ConfigMaps mounted into the server (a chat template); others' (a
            # user's extraVolumes) are not in the render and stay out.
            volumes = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
            mounted = {
                m["mountPath"]: config_maps[volumes[m["name"]]]
                for m in container.get("volumeMounts", [])
                if m["name"] in volumes and volumes[m["name"]] in config_maps
            }
            for mount, adapter_files in adapter_stand_ins(engine, list(container.get("args", []))).items():
                mounted.setdefault(mount, {}).update(adapter_files)
            servers.append(
                Server(
                    label,
                    doc["metadata"]["name"],
                    engine,
                    container["image"],
                    list(container.get("command", [])),
                    list(container.get("args", [])),
                    env,
                    labels.get("llm-stack/model", ""),
                    files=mounted,
                )
            )
    return tuple(servers)


def flag_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def replace_value(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    for i, a in enumerate(out):
        if a == flag and i + 1 < len(out):
            out[i + 1] = value
        elif a.startswith(flag + "="):
            out[i] = f"{flag}={value}"
    return out


def scaled_vllm(server: Server, port: int) -> Server:
    """vLLM on this CPU: one "GPU" (tensor parallel 1), the stand-in's 512-token context, eager
    mode, a 1 GiB KV cache, a free port. Everything else as rendered."""
    args, changes = list(server.args), []
    tp = flag_value(args, "--tensor-parallel-size")
    if tp not in (None, "1"):
        args = replace_value(args, "--tensor-parallel-size", "1")
        changes.append(f"--tensor-parallel-size {tp} -> 1 (no GPUs)")
    mml = flag_value(args, "--max-model-len")
    if mml is not None and int(mml) > STAND_IN_CONTEXT:
        args = replace_value(args, "--max-model-len", str(STAND_IN_CONTEXT))
        changes.append(f"--max-model-len {mml} -> {STAND_IN_CONTEXT} (the stand-in model's context)")
    if flag_value(args, "--port") is not None:
        args = replace_value(args, "--port", str(port))
        changes.append(f"--port -> {port}")
    args.append("--enforce-eager")
    changes.append("+ --enforce-eager, VLLM_CPU_KVCACHE_SPACE=1 (CPU)")
    env = {**server.env, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    return Server(
        server.source, server.deployment, server.engine, server.image, server.command, args, env, server.model, changes
    )


def start_key(server: Server) -> tuple:
    """Everything a start of `server` depends on: two servers with the same key start the same
    process (another deployment name, another values file). The port is free per start, and
    llama-server's --model is the stand-in GGUF whatever was rendered."""
    args = replace_value(replace_value(server.args, "--port", "*"), "--host", "*")
    if server.engine == "llama-server":
        args = replace_value(args, "--model", "*")
    files = tuple(sorted((mount, tuple(sorted(f.items()))) for mount, f in server.files.items()))
    return (
        server.engine,
        server.image,
        tuple(server.command),
        tuple(args),
        tuple(sorted(server.env.items())),
        files,
        server.model,
    )


def adapter_stand_ins(engine: str, args: list[str]) -> dict[str, dict[str, bytes]]:
    """Tiny LoRA adapters (tools/tinymodels.py, shaped for the stand-in models) where a rendered
    command line loads them: mount path -> {relative name: bytes}. vLLM's --lora-modules items
    (JSON: a Hugging Face id is laid out as the hub cache under HF_HOME, a path gets the PEFT
    files); llama-server's --lora / --lora-scaled files (GGUF, comma-separated)."""
    import hashlib
    import json
    import tempfile

    import tinymodels

    out: dict[str, dict[str, bytes]] = {}
    if engine == "vllm" and "--lora-modules" in args:
        for item in args[args.index("--lora-modules") + 1 :]:
            if item.startswith("-"):
                break
            path = json.loads(item)["path"]
            files = tinymodels.hf_lora_files()
            if path.startswith("/"):
                out[path] = files
                continue
            # The hub cache layout (models--ORG--NAME/refs/main, snapshots/REV/), as vLLM's offline
            # snapshot_download finds it under HF_HOME (the chart's /data/huggingface).
            rev = hashlib.sha1(b"".join(files[n] for n in sorted(files))).hexdigest()
            repo = {"refs/main": rev.encode(), **{f"snapshots/{rev}/{n}": b for n, b in files.items()}}
            out[f"/data/huggingface/hub/models--{path.replace('/', '--')}"] = repo
    elif engine == "llama-server":
        for i, a in enumerate(args[:-1]):
            if a in ("--lora", "--lora-scaled"):
                for item in args[i + 1].split(","):
                    path = item.rsplit(":", 1)[0] if a == "--lora-scaled" else item
                    d, name = path.rsplit("/", 1)
                    with tempfile.TemporaryDirectory() as tmp:
                        data = tinymodels.write_gguf_lora(Path(tmp) / name).read_bytes()
                    out.setdefault(d, {})[name] = data
    return out


def materialize(server: Server, root: Path) -> dict[str, Path]:
    """Write the chart's ConfigMap files (and adapter stand-ins) of `server` under `root`; returns
    mount path -> host dir."""
    out = {}
    for i, (mount, files) in enumerate(sorted(server.files.items())):
        d = root / f"mount{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(text)
        out[mount] = d
    return out


def scaled_llama(server: Server, port: int, model_file: Path, mounts: dict[str, Path]) -> Server:
    """llama-server on this host: the stand-in GGUF for the model file, the chart's ConfigMap files
    where the pod would mount them, loopback and a free port."""
    args, changes = list(server.args), []
    for mount, host in mounts.items():
        args = [a.replace(mount.rstrip("/") + "/", str(host) + "/") for a in args]
        changes.append(f"{mount} -> a host folder with the chart's ConfigMap files")
    rendered = flag_value(args, "--model")
    args = replace_value(args, "--model", str(model_file))
    changes.append(f"--model {rendered} -> the stand-in GGUF")
    args = replace_value(replace_value(args, "--port", str(port)), "--host", "127.0.0.1")
    changes.append(f"--host 127.0.0.1 --port {port}")
    return Server(
        server.source,
        server.deployment,
        server.engine,
        server.image,
        server.command,
        args,
        dict(server.env),
        server.model,
        changes,
    )


# -- engines that do not run here: their documented flags -------------------------------------------------


@dataclass(frozen=True)
class FlagSpec:
    source: str
    takes_value: dict[str, bool]  # flag -> whether a value follows
    abbrev: bool = False  # argparse's allow_abbrev: a unique prefix of a flag counts as the flag

    def problems(self, args: list[str]) -> list[str]:
        out, i = [], 0
        while i < len(args):
            a = args[i]
            if not a.startswith("-"):
                out.append(f"{a!r}: a value without a flag")
                i += 1
                continue
            name = a.split("=", 1)[0]
            flag = self.resolve(name)
            if flag is None:
                out.append(f"{name}: not an option of this engine ({self.source})")
                i += 1
                continue
            if self.takes_value[flag] and "=" not in a:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    out.append(f"{name}: expects a value")
                i += 2
            else:
                i += 1
        return out

    def resolve(self, name: str) -> str | None:
        if name in self.takes_value:
            return name
        if self.abbrev:
            matches = [f for f in self.takes_value if f.startswith(name)]
            if len(matches) == 1:
                return matches[0]
        return None


SGLANG_VERSION = "0.5.5"  # charts/vllm-models values.yaml: sglang.image.tag v0.5.5


@functools.cache
def sglang_flags(wheel_dir: Path) -> FlagSpec:
    """SGLang's own argument parser of the pinned release: every add_argument in
    sglang/srt/server_args.py of the sglang wheel from PyPI (read, not imported)."""
    import subprocess
    import sys

    wheels = sorted(wheel_dir.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                str(wheel_dir),
                f"sglang=={SGLANG_VERSION}",
            ],
            check=True,
            timeout=600,
        )
        wheels = sorted(wheel_dir.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as whl:
        tree = ast.parse(io.TextIOWrapper(whl.open("sglang/srt/server_args.py"), encoding="utf-8").read())
    flags: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")
            ]
            action = next(
                (k.value.value for k in node.keywords if k.arg == "action" and isinstance(k.value, ast.Constant)), None
            )
            nargs = next(
                (k.value.value for k in node.keywords if k.arg == "nargs" and isinstance(k.value, ast.Constant)), None
            )
            takes = action not in ("store_true", "store_false") and nargs not in (0, "?")
            for n in names:
                flags[n] = takes
    # launch_server builds a plain argparse.ArgumentParser(): prefixes are accepted (`--tp`).
    return FlagSpec(f"sglang {SGLANG_VERSION} wheel on PyPI, sglang/srt/server_args.py", flags, abbrev=True)


# text-embeddings-router (TEI), image ghcr.io/huggingface/text-embeddings-inference:cpu-1.8, from its CLI
# reference: https://huggingface.co/docs/text-embeddings-inference/cli_arguments (clap: exact names only).
TEI = FlagSpec(
    "https://huggingface.co/docs/text-embeddings-inference/cli_arguments (TEI 1.8)",
    {
        "--model-id": True,
        "--revision": True,
        "--tokenization-workers": True,
        "--dtype": True,
        "--pooling": True,
        "--max-concurrent-requests": True,
        "--max-batch-tokens": True,
        "--max-batch-requests": True,
        "--max-client-batch-size": True,
        "--auto-truncate": False,
        "--default-prompt-name": True,
        "--default-prompt": True,
        "--hf-api-token": True,
        "--hf-token": True,
        "--hostname": True,
        "--port": True,
        "-p": True,
        "--uds-path": True,
        "--huggingface-hub-cache": True,
        "--payload-limit": True,
        "--api-key": True,
        "--json-output": False,
        "--disable-spans": False,
        "--otlp-endpoint": True,
        "--otlp-service-name": True,
        "--prometheus-port": True,
        "--cors-allow-origin": True,
        "--served-model-name": True,
    },
)
# text-generation-launcher (TGI), image ghcr.io/huggingface/text-generation-inference:3.3.4, from its reference:
# https://huggingface.co/docs/text-generation-inference/reference/launcher (clap: exact names only).
TGI = FlagSpec(
    "https://huggingface.co/docs/text-generation-inference/reference/launcher (TGI 3.3)",
    {
        "--model-id": True,
        "--revision": True,
        "--validation-workers": True,
        "--sharded": True,
        "--num-shard": True,
        "--quantize": True,
        "--speculate": True,
        "--dtype": True,
        "--kv-cache-dtype": True,
        "--trust-remote-code": False,
        "--max-concurrent-requests": True,
        "--max-best-of": True,
        "--max-stop-sequences": True,
        "--max-top-n-tokens": True,
        "--max-input-tokens": True,
        "--max-input-length": True,
        "--max-total-tokens": True,
        "--waiting-served-ratio": True,
        "--max-batch-prefill-tokens": True,
        "--max-batch-total-tokens": True,
        "--max-waiting-tokens": True,
        "--max-batch-size": True,
        "--cuda-graphs": True,
        "--hostname": True,
        "--port": True,
        "-p": True,
        "--shard-uds-path": True,
        "--master-addr": True,
        "--master-port": True,
        "--huggingface-hub-cache": True,
        "--weights-cache-override": True,
        "--disable-custom-kernels": False,
        "--cuda-memory-fraction": True,
        "--rope-scaling": True,
        "--rope-factor": True,
        "--json-output": False,
        "--otlp-endpoint": True,
        "--otlp-service-name": True,
        "--cors-allow-origin": True,
        "--api-key": True,
        "--watermark-gamma": True,
        "--watermark-delta": True,
        "--ngrok": False,
        "--ngrok-authtoken": True,
        "--ngrok-edge": True,
        "--tokenizer-config-path": True,
        "--disable-grammar-support": False,
        "--env": False,
        "--max-client-batch-size": True,
        "--lora-adapters": True,
        "--usage-stats": True,
        "--payload-limit": True,
        "--enable-prefill-logprobs": False,
        "--graceful-termination-timeout": True,
    },
)


def documented_flags(server: Server, wheel_dir: Path) -> FlagSpec | None:
    """The flag spec of an engine that cannot run here, by engine and image; None for vLLM and llama-server."""
    if server.engine == "sglang":
        return sglang_flags(wheel_dir)
    if "text-embeddings-inference" in server.image:
        return TEI
    if "text-generation-inference" in server.image:
        return TGI
    return None

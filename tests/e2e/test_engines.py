"""Every engine command line the model charts render (from the shipped models.yaml and from each
ci/*-values.yaml) started once with the real engine, on this host, not in the cluster:

- vLLM: the vllm-cpu image (images/vllm-cpu), `docker run` with the rendered command, arguments
  and environment, as the chart's user (UID 1000), read-only root, the cache on a volume;
- llama-server: Debian's build run on the host (tools/llamacpp.py) with the rendered arguments.

A tiny stand-in model replaces the weights (under the entry's own huggingfaceId or file name),
and only what this machine cannot do is changed (engines.scaled_vllm / scaled_llama list every
change). Each must answer /health and a chat request. SGLang, TEI and TGI cannot run here: their
rendered arguments are checked against the flags of the pinned release (engines.FLAGS sources).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import llamacpp
import pytest
import requests
import tinymodels
from progress import say
from stack import images as stack_images
from stack import models as stack_models

from e2e import engines

SERVERS = engines.rendered_servers()
RUNNABLE = [s for s in SERVERS if s.engine in ("vllm", "llama-server")]
DOCUMENTED = [s for s in SERVERS if s.engine not in ("vllm", "llama-server")]


_GIVEN: set[int] = set()
_GIVEN_LOCK = threading.Lock()


def _free_port() -> int:
    """A free port, never the same one twice in this run (servers start in parallel)."""
    with _GIVEN_LOCK:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port


def _wait_health(url: str, alive, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server exited before /health answered")
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout:.0f}s")


def _check_chat(url: str, model: str) -> None:
    resp = requests.post(
        f"{url}/v1/chat/completions",
        timeout=120,
        json={"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4},
    )
    assert resp.status_code == 200, f"chat with {model}: {resp.status_code} {resp.text[:500]}"
    assert resp.json()["choices"][0]["message"]["content"] is not None, resp.text


@contextlib.contextmanager
def _vllm(server: engines.Server, image: str, workdir: Path):
    """The rendered vLLM container under docker: same command, arguments and environment."""
    model = engines.flag_value(server.args, "--model")
    assert model, server.args
    entry = {"huggingfaceId": model}
    cache = workdir / "data"
    hf_home = cache / "huggingface"
    snapshot = tinymodels.write_hf_cache(hf_home, model, stack_models.hf_files_for(entry))
    revision = engines.flag_value(server.args, "--revision")
    if revision and revision != "main":
        (snapshot.parent.parent / "refs" / revision).write_text(snapshot.name)
    subprocess.run(["chown", "-R", "1000:1000", str(cache)], check=True)
    port = _free_port()
    scaled = engines.scaled_vllm(server, port)
    name = f"llm-charts-engine-{port}"
    mounts = [
        a
        for mount, host in engines.materialize(server, workdir / "mounts").items()
        for a in ("-v", f"{host}:{mount}:ro")
    ]
    # /dev/shm: vLLM's CPU engine needs 280 MiB of it (docker's default holds 64 MiB).
    cmd = [
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--shm-size",
        "512m",
        "--user",
        "1000:1000",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/home/llm",
        "-v",
        f"{cache}:/data",
        *mounts,
        *[a for k, v in sorted(scaled.env.items()) for a in ("-e", f"{k}={v}")],
        "--entrypoint",
        scaled.command[0],
        image,
        *scaled.command[1:],
        *scaled.args,
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    try:
        yield (
            f"http://127.0.0.1:{port}",
            scaled,
            lambda: (
                subprocess.run(
                    ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True
                ).stdout.strip()
                == "true"
            ),
            lambda: subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True, text=True).stdout[
                -4000:
            ],
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@contextlib.contextmanager
def _llama(server: engines.Server, workdir: Path):
    """The rendered llama-server arguments on this host's llama-server (tools/llamacpp.py)."""
    # A neutral general.name: llama.cpp special-cases some model names (Phi-3 expects its <|end|> token).
    model_file = tinymodels.write_gguf(workdir / "model.gguf")
    port = _free_port()
    scaled = engines.scaled_llama(server, port, model_file, engines.materialize(server, workdir / "mounts"))
    log = open(workdir / "llama-server.log", "wb")
    proc = subprocess.Popen(
        [*llamacpp.ensure_llama_server(), *scaled.args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", **scaled.env, "HOME": str(workdir)},
    )
    try:
        yield (
            f"http://127.0.0.1:{port}",
            scaled,
            lambda: proc.poll() is None,
            lambda: (workdir / "llama-server.log").read_text(errors="replace")[-4000:],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def vllm_image(images) -> str:
    return images["vllm-cpu"]


def _cannot_chat(server: engines.Server) -> bool:
    """A vLLM entry for a model whose tokenizer has no chat template, and no --chat-template."""
    model = engines.flag_value(server.args, "--model")
    return server.engine == "vllm" and model in stack_models.NO_CHAT_TEMPLATE and "--chat-template" not in server.args


CASES = [
    pytest.param(
        s,
        id=s.id,
        marks=pytest.mark.xfail(
            strict=True,
            reason=(
                f"{engines.flag_value(s.args, '--model')} has no chat template and the values set no chatTemplate: "
                "real vLLM answers every chat 400 (strict: this fails once it chats)"
            ),
        ),
    )
    if _cannot_chat(s)
    else pytest.param(s, id=s.id)
    for s in RUNNABLE
]


# Servers started at once. Measured on 2 cores: one vLLM start alone takes about 40 s, two at once
# about 110 s (torch and vLLM each use every core), so one at a time is the default.
PARALLEL = int(os.environ.get("LLM_CHARTS_ENGINE_PARALLEL", "1"))


def _start_and_chat(server: engines.Server, vllm_image: str) -> str | None:
    """None when the rendered command line answered /health and a chat; else what went wrong."""
    workdir = Path(tempfile.mkdtemp(prefix="llm-charts-engine-"))
    start = time.monotonic()
    try:
        if server.engine == "vllm":
            runner, timeout = _vllm(server, vllm_image, workdir), 600
        else:
            runner, timeout = _llama(server, workdir), 120
        with runner as (url, scaled, alive, logs):
            try:
                _wait_health(url, alive, timeout)
                _check_chat(url, server.model)
            except (AssertionError, RuntimeError, TimeoutError, requests.RequestException) as exc:
                return (
                    f"{server.id}: {exc}\nrendered: {' '.join(server.command + server.args)}\n"
                    f"changed for this host: {scaled.changes}\nlog:\n{logs()}"
                )
        say(f"  {server.id}: /health and a chat in {time.monotonic() - start:.0f}s ({server.engine})")
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def started(vllm_image) -> dict[str, str | None]:
    """Every runnable command line started once (PARALLEL at a time): id -> None or the failure.
    A command line rendered the same way twice is started once (a vLLM start takes 40-60 s)."""
    first: dict[tuple, engines.Server] = {}
    for s in RUNNABLE:
        first.setdefault(engines.start_key(s), s)
    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {key: pool.submit(_start_and_chat, s, vllm_image) for key, s in first.items()}
        results = {key: f.result() for key, f in futures.items()}
    out = {}
    for s in RUNNABLE:
        ran, failure = first[engines.start_key(s)], results[engines.start_key(s)]
        if ran is not s:
            say(f"  {s.id}: the same command line as {ran.id}, not started again")
            failure = failure and f"the same start as {ran.id}:\n{failure}"
        out[s.id] = failure
    return out


@pytest.mark.parametrize("server", CASES)
def test_each_rendered_command_line_serves_a_chat_with_the_real_engine(server, started):
    failure = started[server.id]
    if failure:
        pytest.fail(failure)


@pytest.mark.parametrize("server", DOCUMENTED, ids=[s.id for s in DOCUMENTED])
def test_engines_that_cannot_run_here_get_only_their_documented_flags(server, tmp_path_factory):
    spec = engines.documented_flags(server, tmp_path_factory.getbasetemp().parent / "sglang-wheel")
    assert spec is not None, f"{server.id}: no flag list for engine {server.engine}, image {server.image}"
    problems = spec.problems(server.args)
    assert not problems, f"{server.id} ({server.image}): {problems}\nargs: {server.args}\nchecked against {spec.source}"


def test_every_rendered_server_is_covered():
    assert RUNNABLE and DOCUMENTED
    assert {s.engine for s in RUNNABLE} == {"vllm", "llama-server"}
    assert len(RUNNABLE) + len(DOCUMENTED) == len(SERVERS)


def test_the_host_llama_server_is_debians_build():
    assert "build 11669" in llamacpp.version()


def test_the_images_are_cached_by_their_inputs(images):
    """A second build of an unchanged image is a lookup, not a build."""
    start = time.monotonic()
    again = stack_images.build_many(list(images))
    assert again == images
    assert time.monotonic() - start < 30, "unchanged images were rebuilt"

"""The backends and the arms of the benchmark.

Backends (pinned to the backend cores):
- canned: Debian nginx answering every POST with one canned chat completion (the throughput
  backend: fast, so that it is not the bottleneck; the direct arm measures its ceiling). It
  listens on two ports; the benchmark routes to the second (`fast-b`), not the catalog's first
  model, so a gateway that silently falls back to the default model is caught (X-Backend-Port).
- paced: the project's mock backend (images/mock-openai) streaming a role chunk and N deltas
  every interval_ms (the streaming backend).

Arms (each proxy pinned to the proxy cores, one worker each unless --workers says otherwise):
direct, nginx (plain proxy_pass, the ceiling), gateway (charts/api-gateway, rendered and run by
tests/gateway/runner.py), litellm (pinned, one worker, own venv), onwards (crates.io build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from . import REPO, procs

LITELLM_VERSION = "1.100.5"  # pinned; 1.82.7 and 1.82.8 were reported backdoored: never those
ONWARDS_VERSION = "1.2.0"
UNPRIVILEGED = 65534  # like tests/gateway/runner.py: the proxies run as nobody when we are root

CANNED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "fast-b",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the canned backend."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 256, "completion_tokens": 8, "total_tokens": 264},
}
# Arms in report order. gateway-nousage: the gateway with usage.enabled false (the cost of the
# accounting); baseline: another copy of the chart (--baseline REF), the cost of what changed since.
ORDER = ["direct", "nginx", "gateway", "gateway-nousage", "baseline", "litellm", "onwards"]
MODELS = ["fast-a", "fast-b", "stream"]  # fast-a first: the gateway's default model, never asked for
ROUTED = "fast-b"


class ArmUnavailable(RuntimeError):
    """The arm cannot run on this machine; the message says why (reported, not fatal)."""


def _nginx() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _drop_privileges(root: Path) -> dict:
    if os.geteuid() != 0:
        return {}
    for p in [root, *root.rglob("*")]:
        os.chown(p, UNPRIVILEGED, UNPRIVILEGED, follow_symlinks=False)
    return {"user": UNPRIVILEGED, "group": UNPRIVILEGED, "extra_groups": []}


def _start_nginx(root: Path, conf: str, probe: str) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text(conf)
    err = (root / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [_nginx(), "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=err,
        **_drop_privileges(root),
    )
    err.close()
    if procs.wait_http(probe, 10, proc) != 200:
        procs.stop(proc)
        raise RuntimeError(f"nginx in {root} did not start:\n{(root / 'error.log').read_text()[-2000:]}")
    return proc


NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes {workers};
pid {root}/nginx.pid;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  client_body_temp_path {root}/client_body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
"""


class Backends:
    """The canned fast backend (two ports) and the paced streaming mock."""

    def __init__(self, workdir: Path, cpus: set[int]):
        self.workdir, self.cpus = workdir, cpus
        self.port_a, self.port_b = procs.free_port(), procs.free_port()
        self.canned: subprocess.Popen | None = None
        self.mock = None

    def start(self) -> None:
        body = json.dumps(CANNED, separators=(",", ":"))
        # Like a model server, the backend reads the whole body before it answers (nginx's own
        # `return` would answer first and discard the body: a 1 MB direct arm would measure nothing).
        # The Lua module is loaded the way the gateway tests load it on Debian.
        import yaml

        from gateway.runner import DEBIAN_VALUES, debian_overrides, deep_merge

        deb = deep_merge(yaml.safe_load(DEBIAN_VALUES.read_text()), debian_overrides())["nginx"]
        modules = "".join(f"load_module {m};\n" for m in deb["loadModules"])
        conf = (
            modules
            + NGINX_COMMON.format(workers=1, root=self.workdir / "canned")
            + textwrap.dedent(f"""\
              access_log off;
              client_max_body_size 64m;
              client_body_buffer_size 2m;
              lua_package_path "{deb["luaPackagePath"]};;";
              server {{
                listen 127.0.0.1:{self.port_a};
                listen 127.0.0.1:{self.port_b};
                default_type application/json;
                add_header X-Backend-Port $server_port always;
                location = /health {{ return 200 '{{}}'; }}
                location = /v1/models {{ return 200 '{{"object":"list","data":[]}}'; }}
                location / {{ content_by_lua_block {{ ngx.req.read_body() ngx.print([[{body}]]) }} }}
              }}
            }}
            """)
        )
        self.canned = _start_nginx(self.workdir / "canned", conf, f"http://127.0.0.1:{self.port_a}/health")
        from gateway.backends import MockBackend  # the gateway harness's mock process wrapper

        (self.workdir / "mock").mkdir(parents=True, exist_ok=True)
        self.mock = MockBackend(
            "--served-model-name", "stream", "--mock-any-model", log_dir=self.workdir / "mock"
        ).start()
        procs.pin(self.pids(), self.cpus)

    def pids(self) -> list[int]:
        out = procs.tree(self.canned.pid) if self.canned else []
        return out + ([self.mock.proc.pid] if self.mock and self.mock.proc else [])

    def canned_pids(self) -> list[int]:
        return procs.tree(self.canned.pid) if self.canned else []

    def stop(self) -> None:
        procs.stop(self.canned)
        if self.mock:
            self.mock.stop()


class Arm:
    name = ""
    label = ""

    def __init__(self, backends: Backends, workdir: Path, cpus: set[int], workers: int):
        self.b, self.workdir, self.cpus, self.workers = backends, workdir / self.name, cpus, workers
        self.fast_port = self.stream_port = 0
        self.proc: subprocess.Popen | None = None
        self.version = ""

    path = "/v1/chat/completions"

    def start(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        procs.stop(self.proc)

    def route_ok(self, headers: dict[str, str]) -> str:
        """'' when the answer came from the routed backend; else what is wrong."""
        port = headers.get("x-backend-port") or headers.get("llm_provider-x-backend-port")
        if port != str(self.b.port_b):
            return f"answered by backend port {port}, expected {self.b.port_b}"
        return ""

    def log_tail(self) -> str:
        logs = sorted(self.workdir.glob("*.log")) if self.workdir.exists() else []
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


class Direct(Arm):
    name, label = "direct", "direct to backend"

    def start(self) -> None:
        self.fast_port, self.stream_port = self.b.port_b, self.b.mock.port
        self.version = "-"

    def pids(self) -> list[int]:
        return []


class PlainNginx(Arm):
    name, label = "nginx", "plain nginx proxy_pass"

    def __init__(
        self, *a, body_buffer: str = "", max_body: str = "64m", keepalive: str = "", keepalive_timeout: str = "", **kw
    ):
        super().__init__(*a, **kw)
        self.body_buffer, self.max_body = body_buffer, max_body
        # The gateway's upstream keepalive pool, when known: the same connection reuse for both.
        self.keepalive = keepalive or "64"
        self.keepalive_timeout = f"keepalive_timeout {keepalive_timeout};" if keepalive_timeout else ""

    def start(self) -> None:
        self.fast_port, self.stream_port = procs.free_port(), procs.free_port()
        root = self.workdir
        buf = f"client_body_buffer_size {self.body_buffer};" if self.body_buffer else ""
        loc = textwrap.dedent("""\
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 3600s;""")
        conf = NGINX_COMMON.format(workers=self.workers, root=root) + textwrap.dedent(f"""\
              log_format bench escape=json '{{"time":"$time_iso8601","status":$status,"request_time":$request_time,"upstream":"$upstream_addr","bytes":$bytes_sent,"length":$request_length}}';
              access_log {root}/access.log bench;
              client_max_body_size {self.max_body};
              {buf}
              upstream fast {{ server 127.0.0.1:{self.b.port_b}; keepalive {self.keepalive}; {self.keepalive_timeout} }}
              upstream paced {{ server 127.0.0.1:{self.b.mock.port}; keepalive {self.keepalive}; {self.keepalive_timeout} }}
              server {{
                listen 127.0.0.1:{self.fast_port};
                location = /healthz {{ return 200 'ok'; }}
                location / {{ proxy_pass http://fast;
            {textwrap.indent(loc, "    ")} }}
              }}
              server {{
                listen 127.0.0.1:{self.stream_port};
                location / {{ proxy_pass http://paced;
            {textwrap.indent(loc, "    ")} }}
              }}
            }}
            """)
        self.proc = _start_nginx(root, conf, f"http://127.0.0.1:{self.fast_port}/healthz")
        self.version = procs.run_text([_nginx(), "-v"]).replace("nginx version: ", "")
        procs.pin(self.pids(), self.cpus)


class Gateway(Arm):
    name, label = "gateway", "api-gateway (chart)"

    chart = None  # None: charts/api-gateway

    def __init__(self, *a, extra_values: dict | None = None, **kw):
        super().__init__(*a, **kw)
        self.extra_values = extra_values or {}
        self.gw = None

    def values(self) -> dict:
        from gateway.runner import deep_merge

        return deep_merge(
            {
                "nginx": {"workerProcesses": self.workers},
                "models": [{"modelName": m, "huggingfaceId": f"bench/{m}"} for m in MODELS],
                "routing": {
                    "endpoints": {
                        "fast-a": f"127.0.0.1:{self.b.port_a}",
                        "fast-b": f"127.0.0.1:{self.b.port_b}",
                        "stream": f"127.0.0.1:{self.b.mock.port}",
                    }
                },
            },
            self.extra_values,
        )

    def start(self) -> None:
        try:
            from gateway import runner
        except ImportError as exc:
            raise ArmUnavailable(f"tests/gateway/runner.py cannot be imported: {exc}") from exc
        try:
            self.gw = runner.start(self.values(), name=f"bench-{self.name}", ready_timeout=30, chart=self.chart)
        except Exception as exc:
            raise ArmUnavailable(f"the gateway did not start: {str(exc)[-1500:]}") from exc
        self.proc = self.gw.proc
        self.fast_port = self.stream_port = self.gw.port
        self.version = (
            f"chart {_chart_version(self.chart)} on {procs.run_text([_nginx(), '-v']).replace('nginx version: ', '')}"
        )
        # Wait until the health poller has seen the backends (a 503 would otherwise start the run).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self._ready():
            time.sleep(0.2)
        procs.pin(self.pids(), self.cpus)

    def _ready(self) -> bool:
        from gateway import rawhttp

        r = rawhttp.request(
            "127.0.0.1",
            self.fast_port,
            "POST",
            self.path,
            {"model": ROUTED, "messages": [{"role": "user", "content": "hi"}]},
        )
        return r.status == 200

    def route_ok(self, headers: dict[str, str]) -> str:
        if headers.get("x-gateway-model") != ROUTED:
            return f"X-Gateway-Model is {headers.get('x-gateway-model')!r}, expected {ROUTED!r}"
        return super().route_ok(headers)

    def rendered_conf(self) -> str:
        return self.gw.conf.read_text() if self.gw else ""

    def log_tail(self) -> str:
        return self.gw.error_log() if self.gw else ""

    def stop(self) -> None:
        if self.gw:
            from gateway import runner

            runner.cleanup(self.gw)


class GatewayNoUsage(Gateway):
    """The same gateway with usage accounting off: what the accounting costs."""

    name, label = "gateway-nousage", "api-gateway, usage.enabled false"

    def values(self) -> dict:
        from gateway.runner import deep_merge

        return deep_merge(super().values(), {"usage": {"enabled": False}})


class Baseline(Gateway):
    """charts/api-gateway as it was at a git revision (--baseline REF), side by side: what the changes
    since cost. Only the values every version takes (workers, models, endpoints)."""

    name = "baseline"

    def __init__(self, *a, ref: str, **kw):
        super().__init__(*a, **kw)
        self.ref = ref
        self.label = f"api-gateway at {ref}"

    def start(self) -> None:
        root = self.workdir / "chart"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        # The chart and its file:// library, where the relative dependency path finds it.
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", self.ref, "charts/api-gateway", "charts/model-catalog"],
            capture_output=True,
        )
        if archive.returncode != 0:
            raise ArmUnavailable(f"git archive {self.ref}: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
        self.chart = root / "charts" / "api-gateway"
        super().start()


def _chart_version(chart: Path | None = None) -> str:
    try:
        text = ((chart or REPO / "charts" / "api-gateway") / "Chart.yaml").read_text()
        return re.search(r"^version:\s*(\S+)", text, re.M).group(1)
    except (OSError, AttributeError):
        return "?"


# ---- LiteLLM --------------------------------------------------------------------------------


def litellm_venv(cache: Path) -> Path:
    return cache / "litellm-venv"


def ensure_litellm(cache: Path, *, install: bool) -> Path:
    """The pinned LiteLLM proxy in its own venv under build/bench (created on first use)."""
    venv = litellm_venv(cache)
    exe, stamp = venv / "bin" / "litellm", venv / ".bench-ok"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == LITELLM_VERSION:
        return exe
    if not install:
        raise ArmUnavailable(
            f"LiteLLM {LITELLM_VERSION} is not installed yet (a full run installs it into {venv}; --quick does not)"
        )
    print(f"[bench] installing litellm[proxy]=={LITELLM_VERSION} into {venv} (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    p = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        raise ArmUnavailable(f"pip install litellm[proxy]=={LITELLM_VERSION} failed: {p.stderr[-1500:]}")
    stamp.write_text(LITELLM_VERSION + "\n")
    return exe


class LiteLLM(Arm):
    name, label = "litellm", f"LiteLLM {LITELLM_VERSION} (1 worker)"

    def __init__(self, *a, cache: Path, install: bool, **kw):
        super().__init__(*a, **kw)
        self.cache, self.install = cache, install

    def start(self) -> None:
        exe = ensure_litellm(self.cache, install=self.install)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = procs.free_port()
        cfg = self.workdir / "config.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": ROUTED,
                            "litellm_params": {
                                "model": f"openai/{ROUTED}",
                                "api_base": f"http://127.0.0.1:{self.b.port_b}/v1",
                                "api_key": "sk-bench",
                            },
                        },
                        {
                            "model_name": "stream",
                            "litellm_params": {
                                "model": "openai/stream",
                                "api_base": f"http://127.0.0.1:{self.b.mock.port}/v1",
                                "api_key": "sk-bench",
                            },
                        },
                    ],
                    "litellm_settings": {"drop_params": True, "telemetry": False, "set_verbose": False},
                },
                indent=1,
            )
        )  # JSON is YAML
        env = dict(
            os.environ,
            LITELLM_LOG="ERROR",
            LITELLM_TELEMETRY="False",
            LITELLM_MODE="PRODUCTION",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            NO_DOCS="True",
            DISABLE_ADMIN_UI="True",
        )
        log = (self.workdir / "litellm.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        if procs.wait_http(f"http://127.0.0.1:{port}/health/liveliness", 120, self.proc) != 200:
            tail = (self.workdir / "litellm.log").read_text(errors="replace")[-1500:]
            self.stop()
            raise ArmUnavailable(f"LiteLLM did not start: {tail}")
        self.fast_port = self.stream_port = port
        self.version = LITELLM_VERSION
        procs.pin(self.pids(), self.cpus)


# ---- onwards --------------------------------------------------------------------------------


def ensure_onwards(cache: Path, *, build: bool) -> Path:
    """`cargo install onwards --version X --locked --root <cache>` once; the binary after that."""
    root = cache / "cargo"
    exe = root / "bin" / "onwards"
    if exe.exists() and ONWARDS_VERSION in procs.run_text([str(exe), "--version"]):
        return exe
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not build:
        raise ArmUnavailable(
            f"onwards {ONWARDS_VERSION} is not built yet (a full run builds it with "
            f"`cargo install` into {root}; --quick does not)"
        )
    if not os.access(cargo, os.X_OK):
        raise ArmUnavailable("cargo is not installed: onwards (Rust, crates.io) cannot be built")
    print(f"[bench] cargo install onwards {ONWARDS_VERSION} into {root} (10-20 minutes on 2 cores, once)", flush=True)
    log = cache / f"onwards-{ONWARDS_VERSION}-build.log"
    with log.open("wb") as out:
        p = subprocess.run(
            [cargo, "install", "onwards", "--version", ONWARDS_VERSION, "--locked", "--root", str(root)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if p.returncode != 0 or not exe.exists():
        raise ArmUnavailable(
            f"onwards {ONWARDS_VERSION} did not build from crates.io "
            f"(cargo install exit {p.returncode}; log: {log}): "
            f"{log.read_text(errors='replace')[-800:]}"
        )
    return exe


class Onwards(Arm):
    name, label = "onwards", f"onwards {ONWARDS_VERSION} (Rust)"

    def __init__(self, *a, cache: Path, build: bool, **kw):
        super().__init__(*a, **kw)
        self.cache, self.build = cache, build

    def start(self) -> None:
        exe = ensure_onwards(self.cache, build=self.build)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port, mport = procs.free_port(), procs.free_port()
        cfg = self.workdir / "targets.json"
        cfg.write_text(
            json.dumps(
                {
                    "targets": {
                        ROUTED: {"url": f"http://127.0.0.1:{self.b.port_b}"},
                        "stream": {"url": f"http://127.0.0.1:{self.b.mock.port}"},
                    },
                    "http_pool": {"max_idle_per_host": 512, "idle_timeout_secs": 90},
                },
                indent=1,
            )
        )
        # One tokio worker thread: the same one core and one worker as every other proxy.
        env = dict(os.environ, TOKIO_WORKER_THREADS=str(self.workers), RUST_LOG="warn")
        log = (self.workdir / "onwards.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "-f", str(cfg), "--port", str(port), "--metrics-port", str(mport)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        if (
            procs.wait_http(f"http://127.0.0.1:{mport}/readyz", 30, self.proc) != 200
            and procs.wait_http(f"http://127.0.0.1:{port}/v1/models", 5, self.proc) != 200
        ):
            tail = (self.workdir / "onwards.log").read_text(errors="replace")[-1500:]
            self.stop()
            raise ArmUnavailable(f"onwards did not start: {tail}")
        self.fast_port = self.stream_port = port
        out = [ln for ln in procs.run_text([str(exe), "--version"]).splitlines() if ln.startswith("onwards ")]
        self.version = out[-1] if out else ONWARDS_VERSION  # it logs a telemetry line first
        procs.pin(self.pids(), self.cpus)

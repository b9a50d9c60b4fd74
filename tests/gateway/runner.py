"""Render charts/api-gateway and run it on the local (Debian) nginx + libnginx-mod-http-lua.

The chart is rendered with its paths pointed into a scratch folder; every ConfigMap, Secret
and emptyDir volume of the Deployment is materialized at its mountPath, and nginx runs as
the Deployment would run it: as an unprivileged user (nobody, when the tests run as root),
error log on stderr, JSON access log on stdout, both captured to files.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from harness.render import find, get, render_chart

from .backends import free_port, wait_http

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEBIAN_VALUES = HERE / "debian-nginx-values.yaml"
# Each worker adds its counters to /metrics this often (gateway_metrics.FLUSH_SECONDS); the
# gauges below are computed when /metrics is read.
METRICS_FLUSH_SECONDS = 1.0
LIVE_GAUGES = {
    "gateway_model_ready",
    "gateway_model_replicas",
    "gateway_requests_held",
    "gateway_model_demand",
    "gateway_upstream_in_flight",
}
MODELS = HERE / "models.yaml"
# nginx, the Lua module (pulls the NDK module, lua-resty-core, lua-resty-lrucache, LuaJIT) and cjson.
DEBIAN_PACKAGES = ["nginx", "libnginx-mod-http-lua", "lua-cjson"]
UNPRIVILEGED = 65534  # nobody/nogroup: the pod runs as non-root


def ensure_nginx() -> str:
    """Install the Debian packages when missing (root on Debian); raise ToolError saying how otherwise."""
    sys.path.insert(0, str(REPO / "tools"))
    import bootstrap  # tools/bootstrap.py: the one place that installs system packages

    bootstrap.debian_packages(DEBIAN_PACKAGES, purpose="the gateway tests (real nginx + Lua)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        raise bootstrap.ToolError(f"nginx not found after installing {DEBIAN_PACKAGES}")
    return nginx


def debian_overrides() -> dict:
    """Where this machine's cjson.so lives when it is not where the values file says (another arch)."""
    cpath = yaml.safe_load(DEBIAN_VALUES.read_text())["nginx"]["luaPackageCPath"]
    if glob.glob(cpath.split(";")[0].replace("?", "cjson")):
        return {}
    found = sorted(glob.glob("/usr/lib/*/lua/5.1/cjson.so"))
    return {"nginx": {"luaPackageCPath": str(Path(found[0]).parent / "?.so")}} if found else {}


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Gateway:
    """A running gateway. `port`: the API listener, `metrics_port`: /metrics."""

    root: Path
    values: dict
    manifests: list[dict]
    proc: subprocess.Popen
    port: int
    metrics_port: int
    stdout: Path
    stderr: Path
    conf: Path
    secrets: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics_text(self, settle: bool = True) -> str:
        """The /metrics text; settle: once every worker has added what it counted before the call."""
        if settle:
            time.sleep(METRICS_FLUSH_SECONDS + 0.3)
        return requests.get(self.metrics_url, timeout=5).text

    def metric(self, name: str, **labels) -> float:
        """The sum of the series of `name` whose labels include `labels`: a counter (histogram
        part) as settled (metrics_text), a gauge of LIVE_GAUGES as it is now."""
        total = 0.0
        for line in self.metrics_text(settle=name not in LIVE_GAUGES).splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$", line)
            if m and m.group(1) == name and all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def error_log(self, tail: int = 40) -> str:
        lines = self.stderr.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def access_log(self) -> list[dict]:
        """Access log lines so far, parsed (a line that is not JSON fails the caller's assertion)."""
        out = []
        for line in self.stdout.read_text(errors="replace").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"_not_json": line})
        return out

    def raw_access_log(self) -> str:
        return self.stdout.read_text(errors="replace")

    def logged(self, request_id: str, timeout: float = 3.0) -> dict:
        """The access log line of request `request_id` (its X-Request-Id), once written: nginx
        writes lines in batches (accessLog.bufferBytes), each within accessLog.flushSeconds."""
        deadline = time.monotonic() + timeout
        while True:
            entry = next((e for e in self.access_log() if e.get("request_id") == request_id), None)
            if entry or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert entry, f"no access log line for request {request_id} within {timeout} s{self.context()}"
        return entry

    def context(self) -> str:
        """What to print when an assertion about this gateway fails."""
        return f"\n--- nginx error log (tail) ---\n{self.error_log()}\n--- end ---"

    def workers(self) -> list[int]:
        """PIDs of the master's worker processes now."""
        out = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            try:
                out += [int(x) for x in task.read_text().split()]
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            workers = self.workers()
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # A worker stuck in a request outlives a killed master: never leave one behind.
            for pid in workers:
                try:
                    if b"nginx: worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


class GatewayError(AssertionError):
    pass


def chart_dir(chart: str | Path | None = None) -> Path:
    """The chart to run: the argument, else GATEWAY_CHART (the same tests against another copy of the
    chart: a branch, a fork), else charts/api-gateway."""
    chart = chart or os.environ.get("GATEWAY_CHART") or REPO / "charts" / "api-gateway"
    return Path(chart).resolve()


def render(values: dict, chart: str | Path | None = None) -> list[dict]:
    values = deep_merge(debian_overrides(), values)
    return render_chart(chart_dir(chart), values, values_files=[MODELS, DEBIAN_VALUES])


def _write(path: Path, data: bytes, root: Path) -> None:
    path = Path(path)
    if root not in path.parents:
        raise GatewayError(
            f"the chart mounts {path}, outside paths.configDir/tempDir/secretsDir: "
            "a mount the paths values cannot relocate"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def materialize(manifests: list[dict], root: Path, secrets: dict[str, dict[str, str]]) -> dict:
    """Write every volume of the gateway Deployment's containers at its mountPath; return the container."""
    deploys = find(manifests, "Deployment")
    if len(deploys) != 1:
        raise GatewayError(f"expected one Deployment, rendered {[d['metadata']['name'] for d in deploys]}")
    pod = deploys[0]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    container = pod["containers"][0]
    for mount in container.get("volumeMounts", []):
        vol = volumes.get(mount["name"])
        if vol is None:
            raise GatewayError(f"volumeMount {mount['name']} has no volume")
        target = Path(mount["mountPath"])
        if "configMap" in vol or "secret" in vol:
            if "configMap" in vol:
                cm = get(manifests, "ConfigMap", vol["configMap"]["name"])
                files = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
                files.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
                items = vol["configMap"].get("items")
            else:
                name = vol["secret"]["secretName"]
                if name not in secrets:
                    raise GatewayError(f"the Deployment mounts Secret {name}; the test provides {list(secrets)}")
                files = {k: v.encode() for k, v in secrets[name].items()}
                items = vol["secret"].get("items")
            mapping = {i["key"]: i["path"] for i in items} if items else {k: k for k in files}
            for key, rel in mapping.items():
                if key not in files:
                    raise GatewayError(f"volume {mount['name']} names key {key!r}, missing from its source")
                if mount.get("subPath"):
                    if rel == mount["subPath"]:
                        _write(target, files[key], root)
                else:
                    _write(target / rel, files[key], root)
        elif "emptyDir" in vol:
            if root not in target.parents and target != root:
                raise GatewayError(f"emptyDir {mount['name']} at {target} is outside the relocatable paths")
            target.mkdir(parents=True, exist_ok=True)
        else:
            raise GatewayError(f"volume {mount['name']}: kind {list(vol)} is not handled by the test runner")
    return container


def _volume(manifests: list[dict], name: str) -> dict:
    pod = find(manifests, "Deployment")[0]["spec"]["template"]["spec"]
    return next(v for v in pod.get("volumes", []) if v["name"] == name)


def start(
    values: dict,
    *,
    secrets: dict[str, dict[str, str]] | None = None,
    name: str = "gw",
    ready_timeout: float = 15.0,
    chart: str | Path | None = None,
) -> Gateway:
    """Render with `values` (on top of models.yaml and the Debian values), materialize, run, wait for /readyz.
    `chart`: another copy of the chart (the benchmark's baseline), see chart_dir()."""
    nginx = ensure_nginx()
    root = Path(tempfile.mkdtemp(prefix=f"gateway-{name}-"))
    os.chmod(root, 0o755)
    try:
        return _start(nginx, root, values, secrets, name, ready_timeout, chart)
    except BaseException:
        if not os.environ.get("GATEWAY_KEEP_TMP"):
            shutil.rmtree(root, ignore_errors=True)
        raise


def _start(nginx: str, root: Path, values: dict, secrets, name: str, ready_timeout: float, chart) -> Gateway:
    port, metrics_port = free_port(), free_port()
    paths = {"configDir": str(root / "config"), "tempDir": str(root / "tmp"), "secretsDir": str(root / "secrets")}
    if "redisSecretDir" in (chart_dir(chart) / "values.yaml").read_text():  # older copies have no such path
        paths["redisSecretDir"] = str(root / "redis-secret")
    values = deep_merge({"containerPort": port, "metrics": {"port": metrics_port}, "paths": paths}, values)
    manifests = render(values, chart)
    container = materialize(manifests, root, secrets or {})
    conf = root / "config" / "nginx.conf"
    if not conf.exists():
        raise GatewayError(f"the rendered ConfigMap put no nginx.conf at {conf}")
    stdout, stderr = root / "access.log", root / "error.log"
    stdout.touch()
    stderr.touch()
    # Exactly what the Deployment runs (nginx.binary is Debian's in debian-nginx-values.yaml).
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if not cmd:
        cmd = [nginx, "-p", str(root / "tmp") + "/", "-e", "/dev/stderr", "-c", str(conf), "-g", "daemon off;"]
    if not os.access(cmd[0], os.X_OK):
        raise GatewayError(f"the Deployment runs {cmd[0]!r}, not executable here (nginx is {nginx})")
    kwargs = {}
    if os.geteuid() == 0:
        # Run as the pod would: not root (nginx then never switches users and needs no `user`),
        # with only the emptyDirs and its stdout/stderr writable; ConfigMap and Secret files stay root's.
        writable = [stdout, stderr] + [
            Path(m["mountPath"])
            for m in container.get("volumeMounts", [])
            if "emptyDir" in _volume(manifests, m["name"])
        ]
        for top in writable:
            for p in [top, *(top.rglob("*") if top.is_dir() else [])]:
                os.chown(p, UNPRIVILEGED, UNPRIVILEGED, follow_symlinks=False)
        kwargs = {"user": UNPRIVILEGED, "group": UNPRIVILEGED, "extra_groups": []}
    with stdout.open("ab") as out, stderr.open("ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, **kwargs)
    gw = Gateway(
        root=root,
        values=values,
        manifests=manifests,
        proc=proc,
        port=port,
        metrics_port=metrics_port,
        stdout=stdout,
        stderr=stderr,
        conf=conf,
        secrets=secrets or {},
    )
    status = wait_http(gw.url + "/readyz", timeout=ready_timeout, ok=lambda s: s == 200 or proc.poll() is not None)
    if status != 200:
        gw.stop()
        context = gw.context()
        raise GatewayError(
            f"nginx did not become ready (GET /readyz: {status or 'no answer'}, "
            f"exit code {proc.poll()}); command: {' '.join(cmd)}{context}"
            "\n(GATEWAY_KEEP_TMP=1 keeps the rendered files for a look)"
        )
    return gw


def cleanup(gw: Gateway) -> None:
    gw.stop()
    if not os.environ.get("GATEWAY_KEEP_TMP"):
        shutil.rmtree(gw.root, ignore_errors=True)


def main() -> int:
    """`python -m gateway.runner` (PYTHONPATH=tests): install the Debian packages, print what runs."""
    try:
        nginx = ensure_nginx()
    except Exception as exc:  # ToolError: the message says what to install and how
        print(f"error: {exc}", file=sys.stderr)
        return 1
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"{nginx}: {version}; packages: {', '.join(DEBIAN_PACKAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

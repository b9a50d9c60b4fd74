"""Gateway benchmark (`nox -s bench`): the arms side by side on loopback, interleaved in rounds.

    python -m bench.run              # full run (~10 minutes; installs LiteLLM and builds onwards once)
    python -m bench.run --quick      # smoke check, under 2 minutes (uses LiteLLM/onwards only if cached)
    python -m bench.run --arms direct,nginx,gateway --rounds 3 --update-docs

Every round runs every arm once per measurement point (A B C D ..., the arm order rotated each
round), so slow drifts of a shared machine hit all arms alike; results are medians of the
per-round medians with their min..max spread, and comparisons are ratios or differences taken
within a round. Output: a table on stdout, build/bench/gateway.json, build/bench/latency.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import REPO, load, procs, report
from . import arms as A

OUT = REPO / "build" / "bench"
DEBIAN_PACKAGES = ["wrk", "nginx", "libnginx-mod-http-lua", "lua-cjson"]
ARM_ORDER = [a for a in A.ORDER if a != "baseline"]  # baseline: only with --baseline
BODY_SIZES = {"1KB": 1024, "100KB": 100 * 1024, "1MB": 1024 * 1024}
STREAM_DELTAS, STREAM_INTERVAL_MS = 64, 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke check: 1 round, short runs, 2 concurrencies")
    p.add_argument("--rounds", type=int, help="rounds (default 5; --quick 1)")
    p.add_argument("--seconds", type=float, help="seconds per wrk run (default 3; --quick 1)")
    p.add_argument("--concurrency", help="comma list (default 1,8,32,128; --quick 1,32)")
    p.add_argument("--streams", type=int, help="full streams per arm per round (default 3; --quick 1)")
    p.add_argument(
        "--ttfe-streams",
        type=int,
        help="short streams per arm per round, for the time to first event (default 20; --quick 5)",
    )
    p.add_argument("--arms", default=",".join(ARM_ORDER), help=f"comma list of {ARM_ORDER}")
    p.add_argument("--workers", type=int, default=1, help="worker processes/threads per proxy (default 1)")
    p.add_argument("--proxy-cpus", default="1", help="cores for the proxy under test (default 1)")
    p.add_argument("--load-cpus", default="0", help="cores for wrk and the stream client (default 0)")
    p.add_argument("--backend-cpus", default="0", help="cores for the backends (default 0)")
    p.add_argument("--gateway-values", type=Path, help="extra values file for the gateway (try a tuning)")
    p.add_argument("--baseline", metavar="REF", help="also run charts/api-gateway as it was at this git revision")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the benchmark and all it starts (root may go below 0 to shield every "
        "arm alike from other jobs on a shared machine; default 0)",
    )
    p.add_argument("--no-install", action="store_true", help="never install LiteLLM or build onwards")
    p.add_argument("--update-docs", action="store_true", help="write the tables into docs/performance.md")
    p.add_argument("--out", type=Path, default=OUT / "gateway.json")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rebuild the tables, plot (and docs) from the raw runs in --out",
    )
    a = p.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 5)
    a.seconds = a.seconds or (1 if a.quick else 3)
    a.concurrency = [int(c) for c in (a.concurrency or ("1,32" if a.quick else "1,8,32,128")).split(",")]
    if 1 not in a.concurrency:
        a.concurrency.insert(0, 1)  # added latency is measured at concurrency 1
    a.streams = a.streams or (1 if a.quick else 3)
    a.ttfe_streams = a.ttfe_streams if a.ttfe_streams is not None else (5 if a.quick else 20)
    a.arms = [x for x in ARM_ORDER if x in a.arms.split(",")] + (["baseline"] if a.baseline else [])
    return a


def cpus(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out & os.sched_getaffinity(0) or os.sched_getaffinity(0)


def ensure_system_packages() -> None:
    import bootstrap  # tools/bootstrap.py: the one place that installs Debian packages (root only)

    bootstrap.debian_packages(DEBIAN_PACKAGES, purpose="the gateway benchmark (nox -s bench)")


def chat_body(size: int, model: str) -> bytes:
    """An OpenAI chat request of exactly `size` bytes; `model` last, as the OpenAI SDK orders it."""

    def make(n: int) -> bytes:
        return json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are a benchmark."},
                    {"role": "user", "content": "x" * n},
                ],
                "max_tokens": 8,
                "model": model,
            },
            separators=(",", ":"),
        ).encode()

    base = len(make(0))
    return make(max(0, size - base))


def stream_body(arm: str) -> dict:
    body = {
        "messages": [{"role": "user", "content": "Count to sixty-four."}],
        "stream": True,
        "mock": {"chunks": STREAM_DELTAS, "interval_ms": STREAM_INTERVAL_MS},
        "model": "stream",
    }
    if arm == "litellm":
        body["extra_body"] = {"mock": body["mock"]}  # LiteLLM forwards unknown keys only from extra_body
    return body


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = OUT / "run"
        self.load_cpus, self.proxy_cpus = cpus(args.load_cpus), cpus(args.proxy_cpus)
        self.backend_cpus = cpus(args.backend_cpus)
        self.arms: list[A.Arm] = []
        self.status: dict[str, str] = {}
        self.checks: dict[str, dict] = {}
        self.runs: dict = {"concurrency": {}, "body": {}, "stream": {}}
        self.notes: list[str] = []

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "bodies").mkdir(parents=True)
        os.chmod(self.work, 0o755)
        self.bodies = {}
        for name, size in BODY_SIZES.items():
            path = self.work / "bodies" / f"{name}.json"
            path.write_bytes(chat_body(size, A.ROUTED))
            self.bodies[name] = path
        self.backends = A.Backends(self.work, self.backend_cpus)
        self.backends.start()
        install = not (self.args.quick or self.args.no_install)
        common = dict(workdir=self.work, cpus=self.proxy_cpus, workers=self.args.workers)
        extra = {}
        if self.args.gateway_values:
            import yaml

            extra = yaml.safe_load(self.args.gateway_values.read_text()) or {}
        candidates: dict[str, A.Arm] = {
            "direct": A.Direct(self.backends, **common),
            "gateway": A.Gateway(self.backends, extra_values=extra, **common),
            "gateway-nousage": A.GatewayNoUsage(self.backends, extra_values=extra, **common),
            "litellm": A.LiteLLM(self.backends, cache=OUT, install=install, **common),
            "onwards": A.Onwards(self.backends, cache=OUT, build=install, **common),
        }
        # The gateway first: plain nginx copies its body buffer sizes, so both spill alike.
        if self.args.baseline:
            candidates["baseline"] = A.Baseline(self.backends, ref=self.args.baseline, **common)
        order = ["direct", "gateway", "gateway-nousage", "baseline", "nginx", "litellm", "onwards"]
        for name in order:
            if name not in self.args.arms:
                continue
            if name == "nginx":
                gw = candidates.get("gateway")
                conf = gw.rendered_conf() if gw and gw in self.arms else ""
                candidates["nginx"] = A.PlainNginx(
                    self.backends,
                    body_buffer=_directive(conf, "client_body_buffer_size"),
                    max_body=_directive(conf, "client_max_body_size") or "64m",
                    keepalive=_directive(conf, "keepalive"),
                    keepalive_timeout=_upstream_keepalive_timeout(conf),
                    **common,
                )
            arm = candidates[name]
            self.log(f"starting {name}")
            try:
                arm.start()
            except A.ArmUnavailable as exc:
                self.status[name] = f"skipped: {exc}"
                self.log(f"{name} skipped: {str(exc)[:600]}")
                arm.stop()
                continue
            self.status[name] = "ok"
            self.arms.append(arm)
        self.arms.sort(key=lambda a: A.ORDER.index(a.name))

    def check_routes(self) -> None:
        """One request per arm and body size: 200 from the routed backend (not the default model)."""
        from gateway import rawhttp

        for arm in self.arms:
            self.checks[arm.name] = {}
            for name, path in self.bodies.items():
                try:
                    r = rawhttp.request("127.0.0.1", arm.fast_port, "POST", arm.path, path.read_bytes(), timeout=30)
                    problem = "" if r.status == 200 else f"status {r.status}: {r.body[:200]!r}"
                    problem = problem or arm.route_ok(r.headers)
                except OSError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                self.checks[arm.name][name] = problem or "ok"
                if problem:
                    self.log(f"route check {arm.name} {name}: {problem}")

    # ---- measuring ---------------------------------------------------------------------
    def rotated(self, rnd: int) -> list[A.Arm]:
        k = rnd % len(self.arms)
        return self.arms[k:] + self.arms[:k]

    def wrk(self, arm: A.Arm, body: str, conns: int, seconds: float) -> dict:
        try:
            r = load.wrk(
                f"http://127.0.0.1:{arm.fast_port}{arm.path}",
                self.bodies[body],
                connections=conns,
                seconds=seconds,
                cpus=self.load_cpus,
                proxy_pids=arm.pids(),
                backend_pids=self.backends.canned_pids(),
            )
            return r.as_dict()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            self.log(f"wrk {arm.name} c={conns} {body} failed: {exc}")
            return {"error": str(exc)[:500]}

    def streams(self, arm: A.Arm) -> list[dict]:
        out = []
        for _ in range(self.args.streams):
            before = self.backends.mock.stats().get("chunks_sent", 0)
            try:
                r = load.stream(
                    "127.0.0.1",
                    arm.stream_port,
                    arm.path,
                    stream_body(arm.name),
                    deltas=STREAM_DELTAS,
                    interval_ms=STREAM_INTERVAL_MS,
                ).as_dict()
            except (OSError, RuntimeError) as exc:
                r = {"error": str(exc)[:300]}
            time.sleep(0.05)  # let the mock count the tail it wrote
            r["sent"] = self.backends.mock.stats().get("chunks_sent", 0) - before
            out.append(r)
        # Time to first event needs many samples, not long streams: short ones (role + 2 deltas).
        for _ in range(self.args.ttfe_streams):
            before = self.backends.mock.stats().get("chunks_sent", 0)
            body = stream_body(arm.name)
            body["mock"] = {"chunks": 2, "interval_ms": STREAM_INTERVAL_MS}
            if "extra_body" in body:
                body["extra_body"] = {"mock": body["mock"]}
            try:
                r = load.stream(
                    "127.0.0.1", arm.stream_port, arm.path, body, deltas=2, interval_ms=STREAM_INTERVAL_MS
                ).as_dict()
            except (OSError, RuntimeError) as exc:
                r = {"error": str(exc)[:300]}
            r["kind"] = "ttfe"
            time.sleep(0.03)
            r["sent"] = self.backends.mock.stats().get("chunks_sent", 0) - before
            out.append(r)
        return out

    def warmup(self) -> None:
        for arm in self.arms:
            self.wrk(arm, "1KB", 8, 1)
            self.streams_warm(arm)

    def streams_warm(self, arm: A.Arm) -> None:
        from gateway import rawhttp

        body = stream_body(arm.name)
        body["mock"] = {"chunks": 2, "interval_ms": 1}
        try:
            rawhttp.request("127.0.0.1", arm.stream_port, "POST", arm.path, body, timeout=30)
        except OSError:
            pass

    def measure(self) -> None:
        a, secs = self.args, self.args.seconds
        for rnd in range(a.rounds):
            t0 = time.monotonic()
            order = self.rotated(rnd)
            self.log(f"round {rnd + 1}/{a.rounds}: {' '.join(x.name for x in order)}")
            for c in a.concurrency:
                for arm in order:
                    self.runs["concurrency"].setdefault(str(c), {}).setdefault(arm.name, []).append(
                        self.wrk(arm, "1KB", c, secs)
                    )
            for body in ("100KB", "1MB"):
                for arm in order:
                    self.runs["body"].setdefault(body, {}).setdefault(arm.name, []).append(self.wrk(arm, body, 1, secs))
            for arm in order:
                self.runs["stream"].setdefault(arm.name, []).append(self.streams(arm))
            self.log(f"round {rnd + 1} took {time.monotonic() - t0:.0f}s")
        # 1KB at concurrency 1 is the body sweep's first point.
        self.runs["body"]["1KB"] = self.runs["concurrency"]["1"]

    def stop(self) -> None:
        for arm in self.arms:
            try:
                arm.stop()
            except Exception:
                traceback.print_exc()
        self.backends.stop()


def _directive(conf: str, name: str) -> str:
    m = re.search(rf"^\s*{name}\s+(\S+?);", conf, re.M)
    return m.group(1) if m else ""


def _upstream_keepalive_timeout(conf: str) -> str:
    m = re.search(r"upstream\s+\S+\s*\{[^}]*?keepalive_timeout\s+(\S+?);", conf, re.S)
    return m.group(1) if m else ""


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def _os_release() -> str:
    try:
        return re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        return platform.platform()


def versions(bench: Bench) -> dict:
    def deb(pkg: str) -> str:
        return procs.run_text(["dpkg-query", "-W", "-f=${Version}", pkg]) or "?"

    out = {
        "nginx": deb("nginx"),
        "libnginx-mod-http-lua": deb("libnginx-mod-http-lua"),
        "luajit": deb("libluajit2-5.1-2") if deb("libluajit2-5.1-2") != "?" else deb("libluajit-5.1-2"),
        "lua-cjson": deb("lua-cjson"),
        "wrk": deb("wrk"),
    }
    for arm in bench.arms:
        out[f"arm:{arm.name}"] = arm.version
    head = procs.run_text(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = procs.run_text(["git", "-C", str(REPO), "status", "--porcelain", "--", "charts/api-gateway"])
    out["repo_commit"] = head + (" (charts/api-gateway has uncommitted changes)" if dirty else "")
    out["litellm_pinned"] = A.LITELLM_VERSION
    out["onwards_pinned"] = A.ONWARDS_VERSION
    return out


def report_only(args: argparse.Namespace) -> int:
    old = json.loads(args.out.read_text())
    result = report.build(
        runs=old["raw"],
        status=old["arm_status"],
        checks=old["route_checks"],
        arms=old["arms"],
        config=old["config"],
        machine=old["machine"],
        versions=old["versions"],
        started=old["started"],
        wall_s=old["wall_s"],
        notes=old["notes"],
    )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    text = report.tables(result)
    print(text)
    report.plot(result, OUT / "latency.png")
    if args.update_docs:
        report.update_docs(REPO / "docs" / "performance.md", text, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only(args)
    t0 = time.monotonic()
    ensure_system_packages()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below
    OUT.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    mach = machine()
    try:
        bench.setup()
        if not bench.arms:
            print("no arm could start", file=sys.stderr)
            return 1
        bench.check_routes()
        bench.log("warm-up")
        bench.warmup()
        bench.measure()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    finally:
        logs = {arm.name: arm.log_tail()[-3000:] for arm in bench.arms}
        bench.stop()
    mach["loadavg_end"] = os.getloadavg()
    (OUT / "raw-runs.json").write_text(json.dumps(bench.runs))  # kept even if the report below fails
    result = report.build(
        runs=bench.runs,
        status=bench.status,
        checks=bench.checks,
        arms={a.name: {"label": a.label, "version": a.version} for a in bench.arms},
        config={
            "quick": args.quick,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "streams_per_round": args.streams,
            "ttfe_streams_per_round": args.ttfe_streams,
            "workers_per_proxy": args.workers,
            "nice": args.nice,
            "proxy_cpus": sorted(bench.proxy_cpus),
            "load_cpus": sorted(bench.load_cpus),
            "backend_cpus": sorted(bench.backend_cpus),
            "stream": {"deltas": STREAM_DELTAS, "interval_ms": STREAM_INTERVAL_MS},
            "body_bytes": BODY_SIZES,
            "gateway_values": str(args.gateway_values or ""),
        },
        machine=mach,
        versions=versions(bench),
        started=started,
        wall_s=round(time.monotonic() - t0, 1),
        notes=bench.notes,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    (OUT / "arm-logs.json").write_text(json.dumps(logs, indent=1))
    text = report.tables(result)
    print(text)
    plot = report.plot(result, OUT / "latency.png")
    print(f"\nJSON: {args.out}\nplot: {plot or 'skipped (matplotlib missing)'}\nwall time: {result['wall_s']} s")
    if args.update_docs:
        report.update_docs(REPO / "docs" / "performance.md", text, result)
        print("docs/performance.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

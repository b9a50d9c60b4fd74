"""Where the gateway's time goes: the chart-rendered nginx.conf with one part taken out at a time.

    python -m bench.profilers.ablation [--rounds 5] [--seconds 3]

Starts the gateway as the benchmark does (tests/gateway/runner.py), then runs copies of its
rendered nginx.conf, each with one change, side by side in rounds (plain nginx included):

- as-rendered: the chart's config;
- no-log-lua: without log_by_lua (in-flight release, usage accounting, the Prometheus counters);
- no-body-filter: without body_filter_by_lua (time-to-first-byte, runs on every body chunk);
- unbuffered-log: access_log with one write() per request (accessLog.bufferBytes 0) instead of batches;
- no-access-log: access_log off;
- static-route: no access_by_lua and no balancer_by_lua (the one backend as the upstream server);
- keepalive-256: upstream keepalive 256 instead of the chart's default;
- body-buffer-2m: client_body_buffer_size 2m (a 1 MB body stays in memory, no temp file);
- lean: no Lua and no access log (what is left is the chart's proxy config);
- lean-literal: lean, and proxy_pass to the upstream by name instead of through variables.

Metrics per variant: CPU microseconds per request at high concurrency (the least noise-sensitive
number on a shared machine), requests/s, p50 at concurrency 1 (1 KB and 1 MB bodies).
Output: a table on stdout and build/bench/profile.json. Nothing in the chart is edited.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import arms as A
from .. import procs
from ..run import OUT, Bench, ensure_system_packages, parse_args
from ..stats import diff, fmt, ratio, summary

VARIANTS = [
    "as-rendered",
    "no-log-lua",
    "no-body-filter",
    "unbuffered-log",
    "no-access-log",
    "static-route",
    "keepalive-256",
    "body-buffer-2m",
    "lean",
    "lean-literal",
]


def _sub(pattern: str, repl: str, text: str, what: str, flags=re.S) -> str:
    new, n = re.subn(pattern, repl, text, flags=flags)
    if n == 0:
        raise RuntimeError(f"variant edit '{what}' matched nothing: the chart's nginx.conf changed")
    return new


def variant_conf(conf: str, variant: str, upstream: str) -> str:
    steps = {
        "no-log-lua": ["log"],
        "no-body-filter": ["body"],
        "unbuffered-log": ["unbuffer"],
        "no-access-log": ["nolog"],
        "static-route": ["static"],
        "keepalive-256": ["keepalive"],
        "body-buffer-2m": ["buffer2m"],
        "lean": ["log", "body", "nolog", "static"],
        "lean-literal": ["log", "body", "nolog", "static", "literal"],
    }.get(variant, [])
    for step in steps:
        if step == "log":
            conf = _sub(r"\n[ \t]*log_by_lua_block \{[^{}]*\}", "", conf, "log_by_lua")
        elif step == "body":
            conf = _sub(r"\n[ \t]*body_filter_by_lua_block \{[^{}]*\}", "", conf, "body_filter_by_lua")
        elif step == "unbuffer":
            conf = _sub(r"(\n[ \t]*access_log /dev/stdout gateway) buffer=[^;]*;", r"\1;", conf, "unbuffered")
        elif step == "nolog":
            conf = _sub(r"(\n[ \t]*access_log) /dev/stdout gateway[^;]*;", r"\1 off;", conf, "access_log off")
        elif step == "keepalive":
            conf = _sub(r"(\n[ \t]*keepalive) \d+;", r"\1 256;", conf, "upstream keepalive")
        elif step == "buffer2m":
            conf = _sub(r"(\n[ \t]*client_body_buffer_size) \S+;", r"\1 2m;", conf, "client_body_buffer_size")
        elif step == "literal":
            conf = _sub(
                r"proxy_pass http://gateway_models\$uri\$is_args\$args;",
                "proxy_pass http://gateway_models;",
                conf,
                "literal proxy_pass",
            )
        elif step == "static":
            conf = _sub(
                r"access_by_lua_block \{[^{}]*router\.access\(\)[^{}]*\}",
                f'set $gateway_model "{A.ROUTED}";\n            set $gateway_upstream_host "127.0.0.1";',
                conf,
                "static route",
            )
            # the one backend as the upstream's server: no balancer_by_lua either
            conf = _sub(
                r"server 0\.0\.0\.1:1;[^\n]*\n\s*balancer_by_lua_block \{[^{}]*\}",
                f"server {upstream};",
                conf,
                "static upstream",
            )
    return conf


# Phase timing: the same Lua entry points the chart calls, run n extra times inside one real
# request (os.clock: the worker's CPU time), so each phase's per-request cost is measured without
# the noise of a loaded machine. n comes from the X-Bench-Loops request header.
TIMED_ACCESS = """access_by_lua_block {
                local router = require "gateway_router"
                local n = tonumber(ngx.var.http_x_bench_loops) or 0
                if n > 0 then
                    local t0 = os.clock()
                    for _ = 1, n do router.access() end
                    ngx.header["X-Bench-Access-Us"] = string.format("%.3f", (os.clock() - t0) / n * 1e6)
                end
                router.access()
            }"""
TIMED_LOG = """log_by_lua_block {
                local router = require "gateway_router"
                local n = tonumber(ngx.var.http_x_bench_loops) or 0
                if n > 0 then
                    local t0 = os.clock()
                    for _ = 1, n do router.log() end
                    ngx.log(ngx.WARN, "bench-log-us=", string.format("%.3f", (os.clock() - t0) / n * 1e6))
                end
                router.log()
            }"""
TIMED_BODY = """body_filter_by_lua_block {
                local router = require "gateway_router"
                local n = tonumber(ngx.var.http_x_bench_loops) or 0
                if n > 0 and not ngx.ctx.ttfb then
                    -- the loop feeds a scratch copy of the usage state: the real one sees the chunk once
                    local ctx, real = ngx.ctx, ngx.ctx.usage
                    local scratch = real and { stream = real.stream, chunks = {}, size = 0, events = real.events }
                    ctx.usage = scratch
                    local t0 = os.clock()
                    for _ = 1, n do router.body_filter() end
                    ngx.log(ngx.WARN, "bench-body-filter-us=", string.format("%.3f", (os.clock() - t0) / n * 1e6))
                    ctx.usage, ctx.ttfb = real, nil
                end
                router.body_filter()
            }"""


def timed_conf(conf: str) -> str:
    conf = _sub(r"access_by_lua_block \{[^{}]*router\.access\(\)[^{}]*\}", TIMED_ACCESS, conf, "timed access")
    conf = _sub(
        r"body_filter_by_lua_block \{[^{}]*router\.body_filter\(\)[^{}]*\}", TIMED_BODY, conf, "timed body filter"
    )
    # only the routed location's log phase (the first log_by_lua_block after proxy_pass)
    return _sub(
        r"(proxy_pass http://gateway_models.*?)log_by_lua_block \{[^{}]*\}",
        lambda m: m.group(1) + TIMED_LOG,
        conf,
        "timed log",
    )


def phases(gw, bodies: dict[str, Path], cpu: set[int]) -> dict:
    """Per-request CPU of the gateway's Lua phases, by body size (microseconds)."""
    from gateway import rawhttp

    v = Variant("timed", gw, timed_conf(gw.conf.read_text()), cpu)
    out = {}
    try:
        for name, path in bodies.items():
            loops = {"1KB": 5000, "100KB": 500}.get(name, 50)
            vals: dict[str, list[float]] = {"access_us": [], "log_us": [], "body_filter_us": []}
            for _ in range(5):
                before = v.err.stat().st_size
                r = rawhttp.request(
                    "127.0.0.1",
                    v.port,
                    "POST",
                    v.path,
                    path.read_bytes(),
                    headers={"X-Bench-Loops": str(loops)},
                    timeout=60,
                )
                if r.status != 200:
                    raise RuntimeError(f"timed request answered {r.status}: {r.body[:300]!r}")
                time.sleep(0.1)
                with v.err.open() as f:
                    f.seek(before)
                    log = f.read()
                vals["access_us"].append(float(r.headers["x-bench-access-us"]))
                for key, tag in (("log_us", "bench-log-us="), ("body_filter_us", "bench-body-filter-us=")):
                    m = re.findall(re.escape(tag) + r"([0-9.]+)", log)
                    if m:
                        vals[key].append(float(m[-1]))
            out[name] = {k: summary(x) for k, x in vals.items()}
    finally:
        v.stop()
    return out


class Variant:
    """One copy of the gateway's nginx.conf, run the way tests/gateway/runner.py runs it."""

    def __init__(self, name: str, gw, conf: str, cpu: set[int]):
        self.name, self.gw, self.cpu = name, gw, cpu
        self.port, self.mport = procs.free_port(), procs.free_port()
        root = gw.root
        self.tmp = root / f"tmp-{name}"
        self.tmp.mkdir(exist_ok=True)
        conf = conf.replace(f"listen {gw.port} default_server;", f"listen {self.port} default_server;")
        conf = conf.replace(f"listen {gw.metrics_port};", f"listen {self.mport};")
        conf = conf.replace(str(root / "tmp"), str(self.tmp))
        # Health checks go through the metrics port: point them at this copy's.
        self.conf = root / "config" / f"nginx-{name}.conf"
        self.conf.write_text(conf)
        self.log = root / f"{name}.stdout"
        self.err = root / f"{name}.stderr"
        self.log.touch()
        self.err.touch()
        kwargs = {}
        if os.geteuid() == 0:
            for p in (self.tmp, self.conf, self.log, self.err):
                os.chown(p, A.UNPRIVILEGED, A.UNPRIVILEGED)
            kwargs = {"user": A.UNPRIVILEGED, "group": A.UNPRIVILEGED, "extra_groups": []}
        with self.log.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [A._nginx(), "-p", str(self.tmp), "-c", str(self.conf), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                **kwargs,
            )
        if procs.wait_http(f"http://127.0.0.1:{self.port}/readyz", 15, self.proc) != 200:
            raise RuntimeError(f"variant {name} did not start: {self.err.read_text()[-1500:]}")
        self.fast_port = self.port
        self.path = "/v1/chat/completions"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the health poller must have seen the backend
            from gateway import rawhttp

            r = rawhttp.request("127.0.0.1", self.port, "POST", self.path, {"model": A.ROUTED, "messages": []})
            if r.status == 200:
                break
            time.sleep(0.2)
        procs.pin(self.pids(), cpu)

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid)

    def stop(self) -> None:
        procs.stop(self.proc, signal.SIGQUIT)


def print_phases(costs: dict) -> None:
    from ..report import _table

    rows = [
        [name, fmt(c["access_us"], 1), fmt(c["log_us"], 1), fmt(c["body_filter_us"], 2)] for name, c in costs.items()
    ]
    print("\nGateway Lua per request, CPU microseconds (median (min..max) of 5 timed requests)")
    print(
        _table(
            [
                "body",
                "access_by_lua (router.access)",
                "log_by_lua (router.log)",
                "body_filter_by_lua (router.body_filter) per chunk",
            ],
            rows,
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profilers.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--phases-only", action="store_true", help="only the Lua phase timing (seconds, not minutes)")
    a = p.parse_args(argv)
    ensure_system_packages()
    if a.nice:
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    bench_args = parse_args(["--quick", "--arms", "gateway,nginx", "--no-install"])
    bench = Bench(bench_args)
    variants: list = []
    results: dict = {}
    try:
        bench.setup()
        gw_arm = next(x for x in bench.arms if x.name == "gateway")
        nginx_arm = next(x for x in bench.arms if x.name == "nginx")
        routes = json.loads((gw_arm.gw.root / "config" / "routes.json").read_text())["routes"]
        route = next(r for r in routes if r["name"] == A.ROUTED)
        server = route["discovery"]["servers"][0]  # the bench's routing.endpoints
        upstream = f"{server['host']}:{server['port']}"
        conf = gw_arm.gw.conf.read_text()
        phase_costs = phases(gw_arm.gw, bench.bodies, bench.proxy_cpus)
        print_phases(phase_costs)
        if a.phases_only:
            (OUT / "profile-phases.json").write_text(json.dumps(phase_costs, indent=1))
            return 0
        for name in a.variants.split(","):
            variants.append(Variant(name, gw_arm.gw, variant_conf(conf, name, upstream), bench.proxy_cpus))
        everyone = [nginx_arm, *variants]
        names = ["plain-nginx", *[v.name for v in variants]]
        for target in everyone:  # warm-up
            bench.wrk(target, "1KB", 8, 1)
        for rnd in range(a.rounds):
            k = rnd % len(everyone)
            order = list(zip(names, everyone))[k:] + list(zip(names, everyone))[:k]
            print(f"[profile] round {rnd + 1}/{a.rounds}", flush=True)
            for name, target in order:
                r = results.setdefault(name, {"hi": [], "c1": [], "mb": []})
                r["hi"].append(bench.wrk(target, "1KB", a.concurrency, a.seconds))
                r["c1"].append(bench.wrk(target, "1KB", 1, a.seconds))
                r["mb"].append(bench.wrk(target, "1MB", 1, a.seconds))
    finally:
        for v in variants:
            v.stop()
        bench.stop()

    def vals(name, kind, key):
        return [None if "error" in r else r[key] for r in results[name][kind]]

    rows, out = [], {}
    base = "as-rendered" if "as-rendered" in results else None
    for name in results:
        cpu_us = [None if v is None else 1000 * v for v in vals(name, "hi", "cpu_ms_per_req")]
        out[name] = {
            "cpu_us_per_req": summary(cpu_us),
            "rps": summary(vals(name, "hi", "rps")),
            "p50_ms_c1": summary(vals(name, "c1", "p50_ms")),
            "p50_ms_1mb": summary(vals(name, "mb", "p50_ms")),
            "rps_ratio_vs_plain": ratio(vals(name, "hi", "rps"), vals("plain-nginx", "hi", "rps")),
        }
        if base:
            base_cpu = [None if v is None else 1000 * v for v in vals(base, "hi", "cpu_ms_per_req")]
            out[name]["cpu_us_saved_vs_rendered"] = diff(base_cpu, cpu_us)
        rows.append(
            [
                name,
                fmt(out[name]["cpu_us_per_req"], 1),
                fmt(out[name].get("cpu_us_saved_vs_rendered"), 1),
                fmt(out[name]["rps"], 0),
                fmt(out[name]["rps_ratio_vs_plain"]),
                fmt(out[name]["p50_ms_c1"], 3),
                fmt(out[name]["p50_ms_1mb"], 2),
            ]
        )
    from ..report import _table

    print(
        f"\nGateway ablation: {a.rounds} rounds x {a.seconds} s, c={a.concurrency} for CPU and rps; "
        "median (min..max over rounds)"
    )
    print(
        _table(
            ["variant", "CPU us/req", "saved vs rendered", "req/s", "rps / plain", "p50 c=1 1KB ms", "p50 c=1 1MB ms"],
            rows,
        )
    )
    (OUT / "profile.json").write_text(
        json.dumps({"config": vars(a), "phases_us": phase_costs, "summary": out, "raw": results}, indent=1, default=str)
    )
    print(f"\nJSON: {OUT / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

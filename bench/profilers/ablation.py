"""Where the gateway's time goes: the chart-rendered nginx.conf with one part taken out at a time.

    python -m bench.profilers.ablation [--rounds 5] [--seconds 3]

Starts the gateway as the benchmark does (tests/gateway/runner.py), then runs copies of its
rendered nginx.conf, each with one change, side by side in rounds (plain nginx included):

- as-rendered: the chart's config;
- no-log-lua: without log_by_lua (in-flight release, usage accounting, the Prometheus counters);
- no-body-filter: without body_filter_by_lua (time-to-first-byte, runs on every body chunk);
- unbuffered-log: access_log with one write() per request (accessLog.bufferBytes 0) instead of batches;
- no-access-log: access_log off;
- one-field-log: the access log's format with only the status (what its 20 fields cost);
- static-route: no access_by_lua and no balancer_by_lua (the one backend as the upstream server);
- keepalive-256: upstream keepalive 256 instead of the chart's default;
- body-buffer-2m: client_body_buffer_size 2m (a 1 MB body stays in memory, no temp file);
- lean: no Lua and no access log (what is left is the chart's proxy config);
- lean-literal: lean, and proxy_pass to the upstream by name instead of through variables.

Metrics per variant: CPU microseconds per request at high concurrency (the least noise-sensitive
number on a shared machine), requests/s, p50 at concurrency 1 (1 KB and 1 MB bodies).

First (and alone with --phases-only): the CPU each part of the gateway's Lua costs a request,
timed inside real requests under load (TIMED_PARTS: the phases' entry points and the module
functions they call), including what the balancer adds in all.
Output: tables on stdout and build/bench/profile.json (profile-phases.json). Nothing in the chart
is edited.
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
    "one-field-log",
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
        "one-field-log": ["onefield"],
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
        elif step == "onefield":
            conf = _sub(r"(log_format gateway escape=json )'.*?';\n", r"""\1'{"status":$status}';\n""", conf, "format")
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


# Phase timing inside real requests under load: init_worker wraps the gateway's Lua entry points,
# and the module functions they call, with os.clock (the worker's CPU time), so each part costs
# what a request pays, interpreted wherever LuaJIT does not compile it (a loop of the same call
# inside one request gets compiled and under-reports by ~4x). A wrapper's own cost (an empty
# function, wrapped, timed the same way) is taken off each part once, and off a phase once per
# part call inside it. (label, module, function); "phase.part" labels lie inside "phase".
TIMED_PARTS = [
    ("access", "gateway_router", "access"),
    ("access.cors", "gateway_cors", "handle"),
    ("access.credential_in_query", "gateway_router", "credential_in_query"),
    ("access.api_key", "gateway_router", "caller"),
    ("access.body_read", "gateway_body", "open"),
    ("access.body_scan", "gateway_body", "scan"),
    ("access.body_close", "gateway_body", "close"),
    ("access.route_lookup", "gateway_router", "route_for"),
    ("access.budgets", "gateway_router", "admit"),
    ("access.balancer_choose", "gateway_balancer", "choose"),
    ("access.balancer_acquire", "gateway_balancer", "acquire"),
    ("access.balancer_decision_count", "gateway_metrics", "decision"),
    ("access.usage_start", "gateway_usage", "start"),
    ("balancer", "gateway_balancer", "balance"),
    ("body_filter", "gateway_router", "body_filter"),
    ("body_filter.first_byte", "gateway_metrics", "first_byte"),
    ("body_filter.usage_chunk", "gateway_usage", "chunk"),
    ("log", "gateway_router", "log"),
    ("log.balancer_release", "gateway_balancer", "release"),
    ("log.hold_release", "gateway_hold", "release"),
    ("log.usage_finish", "gateway_usage", "finish"),
    ("log.usage_counters", "gateway_metrics", "usage"),
    ("log.budget_charge", "gateway_budget", "charge"),
    ("log.counters", "gateway_metrics", "log"),
]
# What the balancer adds to a request: choosing, counting in flight, setting the peer, releasing.
BALANCER_PARTS = [
    "access.balancer_choose",
    "access.balancer_acquire",
    "access.balancer_decision_count",
    "balancer",
    "log.balancer_release",
]
TIMED_INIT = """
    do -- bench.profilers.ablation: time the gateway's Lua parts (cumulative, to the error log)
        local cjson = require "cjson.safe"
        local clock = os.clock
        local total, calls = {}, {}
        local function wrap(label, mod, name)
            local m = require(mod)
            local f = assert(m[name], mod .. "." .. name .. " is gone: update TIMED_PARTS")
            m[name] = function(...)
                local t0 = clock()
                local a, b, c, d = f(...)
                total[label] = (total[label] or 0) + (clock() - t0)
                calls[label] = (calls[label] or 0) + 1
                return a, b, c, d
            end
            -- Never compiled (one prototype for every wrapper): its cost is the same inside a
            -- request and in the timer's calibration loop below.
            jit.off(m[name])
        end
        for _, p in ipairs(cjson.decode([=[@PARTS@]=])) do
            wrap(p[1], p[2], p[3])
        end
        package.loaded.bench_empty = { f = function() end }
        wrap("wrapper", "bench_empty", "f")
        local empty = package.loaded.bench_empty
        ngx.timer.every(0.5, function()
            for _ = 1, 1000 do empty.f() end
            ngx.log(ngx.WARN, "bench-phases ", ngx.worker.pid(), " ", cjson.encode({ total = total, calls = calls }))
        end)
    end
"""


def timed_conf(conf: str) -> str:
    parts = json.dumps(TIMED_PARTS)
    return _sub(
        r"(init_worker_by_lua_block \{)", lambda m: m.group(1) + TIMED_INIT.replace("@PARTS@", parts), conf, "timed"
    )


def _phase_reports(err: Path) -> dict[str, dict]:
    """The last cumulative report of each worker in an error log."""
    out = {}
    for m in re.finditer(r"bench-phases (\d+) (\{.*\}), context", err.read_text(errors="replace")):
        out[m.group(1)] = json.loads(m.group(2))
    return out


def phase_costs(before: dict, after: dict) -> dict:
    """CPU microseconds per request of each timed part between two sets of worker reports."""
    total: dict[str, float] = {}
    calls: dict[str, float] = {}
    for pid, rep in after.items():
        old = before.get(pid, {"total": {}, "calls": {}})
        for label, t in rep["total"].items():
            total[label] = total.get(label, 0) + t - old["total"].get(label, 0)
            calls[label] = calls.get(label, 0) + rep["calls"][label] - old["calls"].get(label, 0)
    requests = calls.get("access", 0)
    if not requests or not calls.get("wrapper"):
        raise RuntimeError(f"no timed requests: {calls}")
    wrapper = total["wrapper"] / calls["wrapper"]
    out = {"requests": int(requests), "wrapper_us": wrapper * 1e6, "us_per_request": {}}
    for label, _, _ in TIMED_PARTS:
        if not calls.get(label):
            continue
        t = total[label] - calls[label] * wrapper
        if "." not in label:  # a phase: its parts' wrappers ran inside it
            t -= sum(calls[p] for p in calls if p.startswith(label + ".")) * wrapper
        out["us_per_request"][label] = t / requests * 1e6
    out["us_per_request"]["balancer, all parts"] = sum(out["us_per_request"].get(p, 0) for p in BALANCER_PARTS)
    return out


def phases(gw, bench, cpu: set[int], seconds: float) -> dict:
    """Per-request CPU of the gateway's Lua parts, timed inside real requests (1 KB at c=32, the
    throughput load; the larger bodies at c=4)."""
    v = Variant("timed", gw, timed_conf(gw.conf.read_text()), cpu)
    out = {}
    try:
        for name in bench.bodies:
            c = 32 if name == "1KB" else 4
            bench.wrk(v, name, c, 1)  # warm-up: LuaJIT compiles what it will
            time.sleep(0.7)
            before = _phase_reports(v.err)
            bench.wrk(v, name, c, seconds)
            time.sleep(1.2)  # every worker's next report
            out[name] = phase_costs(before, _phase_reports(v.err))
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

    bodies = list(costs)
    labels = list(next(iter(costs.values()))["us_per_request"])
    rows = [
        [("  " if "." in label else "") + label, *[fmt(costs[b]["us_per_request"].get(label), 2) for b in bodies]]
        for label in labels
    ]
    wrapper = ", ".join(f"{b} {costs[b]['wrapper_us']:.2f} us x {costs[b]['requests']} requests" for b in bodies)
    print(
        f"\nGateway Lua per request, CPU microseconds, timed inside real requests (wrapper cost taken off: {wrapper})"
    )
    print(_table(["part", *bodies], rows), flush=True)


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
        costs = phases(gw_arm.gw, bench, bench.proxy_cpus, a.seconds)
        print_phases(costs)
        if a.phases_only:
            (OUT / "profile-phases.json").write_text(json.dumps(costs, indent=1))
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
        json.dumps({"config": vars(a), "phases_us": costs, "summary": out, "raw": results}, indent=1, default=str)
    )
    print(f"\nJSON: {OUT / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prefix-aware balancing, measured: shared-prefix chat against 3 real llama-server replicas.

    python -m bench.affinity            # full run (20 minutes on 2 shared cores)
    python -m bench.affinity --quick    # smoke check (a smaller model and load, 1 round)

The model servers are three llama-server processes (Debian's llama.cpp, tools/llamacpp.py) on a
random-weight GGUF on which prefill dominates (tools/tinymodels.py: 256 wide, 4 layers, 13 MB,
system prompts of 2,500 tokens), each with one thread, one slot and a RAM prompt cache, so a prompt whose prefix a server
has seen before starts in a fraction of the time. Arms, side by side, interleaved in rounds, each
starting from cold servers (restarted before it):
- prefix, least-request, round-robin: the gateway (charts/api-gateway, rendered and run on real
  nginx by tests/gateway/runner.py) with that policy, the three servers as one model's endpoints;
- nginx: plain nginx with one upstream of the three servers (round robin), what a Service in
  front of the pods gives.
Workloads:
- shared: S long system prompts with C conversations each, T turns per conversation; turn t of
  every conversation runs (at concurrency N) before turn t+1, each turn carrying the history,
  the conversations in a new order each turn (as users answer: in a fixed order, 12
  conversations over 3 servers would give round robin the same server for every turn of a
  conversation, an affinity no real load gives it).
  Each server's prompt cache holds about three such conversations (--cache-mib; llama-server
  logs each entry at 10-12 MiB), as a GPU's KV cache holds only so much: spread over all servers,
  S prompts evict each other; kept apart (S/3 a server, or a few more where the hash is uneven),
  they mostly fit.
  Reported: time to first token (first content event of the stream) p50 and p90, and requests
  per second. The first request of each system prompt misses on every policy: with S=6, C=3,
  T=4 those are 6 of 72 requests, under the 10% above p90 (at C=2, T=3 they were 6 of 36). But a
  second conversation of a prompt sent while its first prefill runs is slow too, so measured 8 of
  72 are full prefills and prefix's p90 is one of them (docs/performance.md).
- unique: requests that share no prefix (every system prompt different): requests per second,
  the cost of prefix routing where it cannot help.
Output: a table on stdout, build/bench/affinity.json, and with --update-docs the section of
docs/performance.md between its affinity markers.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import REPO, procs
from . import arms as A
from .stats import fmt, ratio, summary

OUT = REPO / "build" / "bench"
ARMS = ["prefix", "least-request", "round-robin", "nginx"]
MODEL = "bench"
MARK_BEGIN, MARK_END = "<!-- affinity:begin -->", "<!-- affinity:end -->"
WORDS = (
    "the of and a to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part boat river harbour island ferry north light winter"
).split()

# (GGUF shape, system prompt chars, user chars, reply chars). The byte-level vocabulary makes
# about one token a character. System prompts are longer than the gateway's default
# prefixLength (2048 bytes), as real ones often are: their conversations share one key.
# The model is 256 wide and 4 layers (13 MB): a 2,500-token prefill takes seconds on one thread,
# so prefill dominates, while a run stays within minutes on 2 cores (a 512x8 model is 4x slower).
SHAPES = {
    "full": (dict(width=256, layers=4, heads=4, ff=704, context=4096), 2500, 120, 100),
    "quick": (dict(width=256, layers=4, heads=4, ff=704, context=4096), 2500, 80, 60),
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench.affinity", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller model and load, 1 round")
    p.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    p.add_argument("--prompts", type=int, help="shared system prompts S (default 6; --quick 4)")
    p.add_argument("--conversations", type=int, help="conversations per system prompt C (default 3; --quick 1)")
    p.add_argument("--turns", type=int, help="turns per conversation T (default 4; --quick 2)")
    p.add_argument(
        "--cache-mib",
        type=int,
        default=40,
        help="each server's prompt cache (--cache-ram, MiB; default 40: three conversations of a 2,500-token "
        "prompt, about 10-12 MiB each as llama-server logs them)",
    )
    p.add_argument("--unique", type=int, help="requests of the unique-prompt load (default 12; --quick 9)")
    # Below the servers' capacity: with one slot each, a third request would queue behind a
    # prefill whatever the policy.
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2, for 3 servers)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {ARMS}")
    p.add_argument(
        "--load-factor", type=float, help="the prefix arm's balancing.loadFactor (default: the chart's, 1.25)"
    )
    p.add_argument(
        "--warm-seconds",
        type=int,
        default=0,
        help="the prefix arm's balancing.warmSeconds (default 0, the chart's: no key remembered)",
    )
    p.add_argument("--update-docs", action="store_true", help="write the table into docs/performance.md")
    p.add_argument("--out", type=Path, default=OUT / "affinity.json")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.prompts = a.prompts or (4 if a.quick else 6)
    a.conversations = a.conversations or (1 if a.quick else 3)
    a.turns = a.turns or (2 if a.quick else 4)
    a.unique = a.unique or (6 if a.quick else 12)
    a.arms = [x for x in ARMS if x in a.arms.split(",")]
    a.shape = "quick" if a.quick else "full"
    return a


def log(msg: str) -> None:
    print(f"[affinity {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


class Servers:
    """Three llama-server processes on one GGUF; restart() empties their caches."""

    def __init__(self, workdir: Path, shape: str, cache_mib: int, count: int = 3):
        import llamacpp  # tools/: on sys.path (bench/__init__.py)
        import tinymodels

        self.workdir, self.count, self.cache_mib = workdir, count, cache_mib
        params = SHAPES[shape][0]
        self.gguf = OUT / f"affinity-{params['width']}x{params['layers']}.gguf"
        if not self.gguf.exists():
            log(f"writing {self.gguf.name} (random weights)")
            tinymodels.write_gguf(self.gguf, **params)
        self.prefix = llamacpp.ensure_llama_server()
        self.version = llamacpp.version()
        self.ports = [procs.free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, port in enumerate(self.ports):
            log_file = (self.workdir / f"llama-server-{i}.log").open("ab")
            # One thread, one slot, a RAM prompt cache of a few prompts: a seen prefix is reused, as
            # vLLM's prefix cache would, and like a GPU's KV cache it holds only so much. --threads-http: its default pool is a few threads, and every idle keep-alive
            # connection of a proxy holds one (new connections then wait, or idle ones get closed
            # under the proxy's feet: a POST nginx cannot resend, a 502).
            self.procs.append(
                subprocess.Popen(
                    [
                        *self.prefix,
                        "--model",
                        str(self.gguf),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--alias",
                        MODEL,
                        "-t",
                        "1",
                        "-c",
                        "4096",
                        "-np",
                        "1",
                        "--cache-ram",
                        str(self.cache_mib),
                        "--threads-http",
                        "16",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                )
            )
            log_file.close()
        for port, proc in zip(self.ports, self.procs):
            if procs.wait_http(f"http://127.0.0.1:{port}/health", 120, proc) != 200:
                raise RuntimeError(
                    f"llama-server on {port} did not start:\n"
                    + (self.workdir / f"llama-server-{self.ports.index(port)}.log").read_text()[-2000:]
                )

    def stop(self) -> None:
        for proc in self.procs:
            procs.stop(proc)
        self.procs = []

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]


class GatewayArm:
    def __init__(self, policy: str, servers: Servers, load_factor: float | None = None, warm_seconds: int = 0):
        self.name, self.policy, self.servers, self.gw = policy, policy, servers, None
        self.balancing = (
            {"policy": policy}
            | ({"loadFactor": load_factor} if load_factor else {})
            | ({"warmSeconds": warm_seconds} if warm_seconds else {})
        )

    def start(self) -> None:
        from gateway import runner

        values = {
            "models": [{"modelName": MODEL, "gguf": "bench.gguf"}],
            "routing": {"endpoints": {MODEL: self.servers.addresses}},
            "balancing": self.balancing,
            "healthCheck": {"intervalSeconds": 2},
            "accessLog": {"enabled": False},
            "nginx": {"workerProcesses": 1},
        }
        self.gw = runner.start(values, name=f"affinity-{self.policy}")
        self.url = self.gw.url
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            import requests

            entry = requests.get(self.url + "/v1/models", timeout=5).json()["data"][0]
            if entry.get("replicas", {}).get("ready") == len(self.servers.ports):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the gateway never saw the 3 servers ready: {entry}")

    def stop(self) -> None:
        from gateway import runner

        if self.gw:
            runner.cleanup(self.gw)
            self.gw = None


class NginxArm:
    name = "nginx"

    def __init__(self, servers: Servers, workdir: Path):
        self.servers, self.root, self.proc = servers, workdir / "nginx", None

    def start(self) -> None:
        port = procs.free_port()
        servers = "".join(f"server {a};" for a in self.servers.addresses)
        # No upstream keepalive: llama-server closes its connection after every stream while
        # promising keep-alive, and a plain proxy that reuses it gets 502s (the gateway asks
        # for Connection: close on those streams instead).
        conf = A.NGINX_COMMON.format(workers=1, root=self.root) + textwrap.dedent(f"""\
              access_log off;
              upstream pods {{ {servers} }}
              server {{
                listen 127.0.0.1:{port};
                location = /healthz {{ return 200 'ok'; }}
                location / {{ proxy_pass http://pods; proxy_http_version 1.1;
                             proxy_buffering off; proxy_read_timeout 600s; }}
              }}
            }}
            """)
        self.proc = A._start_nginx(self.root, conf, f"http://127.0.0.1:{port}/healthz")
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        procs.stop(self.proc)


def first_token(url: str, messages: list[dict], max_tokens: int) -> tuple[float, float]:
    """(time to the first content event, total time) of one streamed chat request."""
    import requests

    t0 = time.monotonic()
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0}
    ttft = None
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}: {r.text[:300]}")
        for line in r.iter_lines():
            if ttft is None and line.startswith(b"data:") and b'"content"' in line:
                ttft = time.monotonic() - t0
    total = time.monotonic() - t0
    return (ttft if ttft is not None else total), total


def shared_load(args, seed: int) -> list[list[list[dict]]]:
    """turns[t] = the message lists of turn t of every conversation (history included)."""
    _, sys_chars, user_chars, reply_chars = SHAPES[args.shape]
    rng = random.Random(seed)
    systems = [text(rng, sys_chars) for _ in range(args.prompts)]
    conversations = [[{"role": "system", "content": s}] for s in systems for _ in range(args.conversations)]
    turns = []
    for _ in range(args.turns):
        this = []
        rng.shuffle(conversations)  # a new order each turn (module docstring)
        for conv in conversations:
            conv.append({"role": "user", "content": text(rng, user_chars)})
            this.append([dict(m) for m in conv])
            conv.append({"role": "assistant", "content": text(rng, reply_chars)})
        turns.append(this)
    return turns


def unique_load(args, seed: int) -> list[list[dict]]:
    _, sys_chars, user_chars, _ = SHAPES[args.shape]
    rng = random.Random(seed + 1000)
    return [
        [{"role": "system", "content": text(rng, sys_chars // 2)}, {"role": "user", "content": text(rng, user_chars)}]
        for _ in range(args.unique)
    ]


def run_arm(arm, args, rnd: int) -> dict:
    errors: list[str] = []
    ttfts: list[float] = []

    def one(messages):
        try:
            ttft, _ = first_token(arm.url, messages, max_tokens=4)
            return ttft
        except Exception as exc:  # counted and reported, never hidden
            errors.append(str(exc)[:200])
            return None

    t0 = time.monotonic()
    n = 0
    with ThreadPoolExecutor(args.concurrency) as pool:
        for turn in shared_load(args, seed=rnd):
            for ttft in pool.map(one, turn):
                n += 1
                if ttft is not None:
                    ttfts.append(ttft)
    shared_s = time.monotonic() - t0
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        unique = [x for x in pool.map(one, unique_load(args, seed=rnd)) if x is not None]
    unique_s = time.monotonic() - t0
    q = statistics.quantiles(ttfts, n=10) if len(ttfts) >= 2 else [float("nan")] * 9
    return {
        "ttft_p50": statistics.median(ttfts) if ttfts else None,
        "ttft_p90": q[8],
        "shared_requests": n,
        "shared_rps": len(ttfts) / shared_s,
        "unique_rps": len(unique) / unique_s,
        "unique_requests": args.unique,
        "errors": errors,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    work = OUT / "affinity-run"
    servers = Servers(work, args.shape, args.cache_mib)
    arms = {
        name: (
            NginxArm(servers, work)
            if name == "nginx"
            else GatewayArm(name, servers, *((args.load_factor, args.warm_seconds) if name == "prefix" else ()))
        )
        for name in args.arms
    }
    runs: dict[str, list[dict]] = {name: [] for name in args.arms}
    started = time.time()
    try:
        for rnd in range(args.rounds):
            order = args.arms[rnd % len(args.arms) :] + args.arms[: rnd % len(args.arms)]
            log(f"round {rnd + 1}/{args.rounds}: {' '.join(order)}")
            for name in order:
                servers.restart()  # cold caches for every arm
                arm = arms[name]
                arm.start()
                try:
                    result = run_arm(arm, args, rnd)
                finally:
                    arm.stop()
                runs[name].append(result)
                log(
                    f"  {name}: ttft p50 {result['ttft_p50']:.3f}s p90 {result['ttft_p90']:.3f}s, shared "
                    f"{result['shared_rps']:.2f} req/s, unique {result['unique_rps']:.2f} req/s, "
                    f"{len(result['errors'])} errors"
                )
    finally:
        servers.stop()
    result = build(args, runs, servers, time.time() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = tables(result)
    print(table)
    if args.update_docs:
        update_docs(REPO / "docs" / "performance.md", table)
    failed = [name for name, rounds in runs.items() for r in rounds if r["errors"]]
    if failed:
        log(f"requests failed in: {sorted(set(failed))}")
        return 1
    return 0


def build(args, runs: dict, servers: Servers, wall_s: float) -> dict:
    def values(name, key):
        return [r[key] for r in runs.get(name, [])]

    out = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "llama_server": servers.version,
        "gguf": {"file": servers.gguf.name, "bytes": servers.gguf.stat().st_size, **SHAPES[args.shape][0]},
        "wall_s": wall_s,
        "runs": runs,
        "summary": {},
    }
    out["config"]["update_docs"] = bool(args.update_docs)
    for name in runs:
        s = {key: summary(values(name, key)) for key in ("ttft_p50", "ttft_p90", "shared_rps", "unique_rps")}
        if "round-robin" in runs and name != "round-robin":
            s["ttft_p90_vs_rr"] = ratio(values(name, "ttft_p90"), values("round-robin", "ttft_p90"))
            s["unique_rps_vs_rr"] = ratio(values(name, "unique_rps"), values("round-robin", "unique_rps"))
            s["shared_rps_vs_rr"] = ratio(values(name, "shared_rps"), values("round-robin", "shared_rps"))
        out["summary"][name] = s
    return out


def tables(res: dict) -> str:
    cfg = res["config"]
    lines = [
        f"Shared-prefix chat: {cfg['prompts']} system prompts x {cfg['conversations']} conversations x "
        f"{cfg['turns']} turns, concurrency {cfg['concurrency']}, a {cfg['cache_mib']} MiB prompt cache per server; "
        f"unique load: {cfg['unique']} requests"
        f"{'; prefix loadFactor ' + str(cfg['load_factor']) if cfg.get('load_factor') else ''}"
        f"{'; prefix warmSeconds ' + str(cfg['warm_seconds']) if cfg.get('warm_seconds') else ''}. "
        f"3 x {res['llama_server']} on {res['gguf']['file']} ({res['gguf']['bytes'] / 1e6:.0f} MB), "
        f"{cfg['rounds']} round(s), median (min..max) over rounds.",
        "",
        "| arm | TTFT p50 (s) | TTFT p90 (s) | p90 vs round-robin | shared req/s | unique req/s | unique vs round-robin |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in res["summary"].items():
        lines.append(
            f"| {name} | {fmt(s['ttft_p50'], 3)} | {fmt(s['ttft_p90'], 3)} | "
            f"{fmt(s.get('ttft_p90_vs_rr'), 2)} | {fmt(s['shared_rps'], 2)} | {fmt(s['unique_rps'], 2)} | "
            f"{fmt(s.get('unique_rps_vs_rr'), 2)} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(path: Path, table: str) -> None:
    doc = path.read_text()
    block = f"{MARK_BEGIN}\n{table}{MARK_END}"
    if MARK_BEGIN in doc:
        head, rest = doc.split(MARK_BEGIN, 1)
        doc = head + block + rest.split(MARK_END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

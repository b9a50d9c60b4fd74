"""CPU profile of one gateway worker and one plain nginx worker under the same load (Linux perf).

    python -m bench.profilers.perf [--seconds 5] [--concurrency 32]

Starts the backends, the gateway (tests/gateway/runner.py) and plain nginx as the benchmark does,
drives each with wrk, samples its worker with `perf record -g`, and prints where the worker's
CPU goes by shared object (kernel, nginx, LuaJIT, JIT code, libc, libcrypto, PCRE) and the top
symbols. Needs `perf` (Debian: linux-perf) and perf_event access (root). Files: build/bench/perf/.

    python -m bench.profilers.perf --syscalls

counts instead the worker's system calls per request (`strace -c` over one wrk run): exact
counts, the same on a loaded machine as on an idle one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from .. import arms as A
from ..run import OUT, ensure_system_packages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profilers.perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--syscalls", action="store_true", help="system calls per request (strace -c) instead of a profile")
    a = p.parse_args(argv)
    perf = shutil.which("strace" if a.syscalls else "perf")
    if not perf:
        print(f"{'strace' if a.syscalls else 'perf (Debian: linux-perf)'} is not installed", file=sys.stderr)
        return 1
    ensure_system_packages()
    work = OUT / "perf"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from ..run import chat_body

    body = work / "1KB.json"
    body.write_bytes(chat_body(1024, A.ROUTED))
    backends = A.Backends(work, {0})
    backends.start()
    arms = []
    try:
        gw = A.Gateway(backends, workdir=work, cpus={1}, workers=1)
        gw.start()
        arms.append(gw)
        conf = gw.rendered_conf()
        from ..run import _directive

        ng = A.PlainNginx(
            backends,
            workdir=work,
            cpus={1},
            workers=1,
            body_buffer=_directive(conf, "client_body_buffer_size"),
            keepalive=_directive(conf, "keepalive"),
        )
        ng.start()
        arms.append(ng)
        for arm in arms:
            worker = next(pid for pid in arm.pids() if pid != arm.proc.pid)
            if a.syscalls:
                syscalls(arm, worker, body, a)
                continue
            wrk = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    "0",
                    "wrk",
                    "-t1",
                    f"-c{a.concurrency}",
                    f"-d{a.seconds + 3}s",
                    "-s",
                    str(A.REPO / "bench" / "wrk_post.lua"),
                    f"http://127.0.0.1:{arm.fast_port}{arm.path}",
                ],
                env=dict(os.environ, BENCH_BODY_FILE=str(body)),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)
            data = work / f"{arm.name}.data"
            subprocess.run(
                [perf, "record", "-F", "1999", "-g", "-o", str(data), "-p", str(worker), "--", "sleep", str(a.seconds)],
                capture_output=True,
            )
            wrk.communicate()
            print(f"\n=== {arm.name}: worker {worker}, CPU by shared object")
            for sort, n in (("dso", 10), ("dso,sym", 20)):
                rep = subprocess.run(
                    [perf, "report", "-i", str(data), "--no-children", "-g", "none", "--sort", sort, "--stdio"],
                    capture_output=True,
                    text=True,
                ).stdout
                print("\n".join([ln for ln in rep.splitlines() if "%" in ln and not ln.startswith("#")][:n]))
    finally:
        for arm in arms:
            arm.stop()
        backends.stop()
    return 0


def syscalls(arm: A.Arm, worker: int, body, a) -> None:
    """strace -c on the worker while one wrk run (and nothing else) drives it; calls per request."""
    import json

    out = OUT / "perf" / f"{arm.name}-syscalls.txt"
    trace = subprocess.Popen(["strace", "-c", "-o", str(out), "-p", str(worker)], stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached (nothing flows yet)
    url = f"http://127.0.0.1:{arm.fast_port}{arm.path}"
    wrk = subprocess.run(
        ["wrk", "-t1", f"-c{a.concurrency}", f"-d{a.seconds}s", "-s", str(A.REPO / "bench" / "wrk_post.lua"), url],
        env=dict(os.environ, BENCH_BODY_FILE=str(body)),
        capture_output=True,
        text=True,
    )
    time.sleep(0.5)
    trace.send_signal(2)  # strace writes its table on SIGINT
    trace.wait(timeout=30)
    requests = json.loads(wrk.stdout.split("BENCH_JSON ", 1)[1].splitlines()[0])["requests"]
    print(f"\n=== {arm.name}: worker {worker}, system calls per request ({requests} requests)")
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[3].isdigit() and f[-1] not in ("total", "syscall") and int(f[3]) >= requests / 100:
            print(f"  {f[-1]:<14} {int(f[3]) / requests:7.3f}")  # the ones of at least 1 in 100 requests


if __name__ == "__main__":
    sys.exit(main())

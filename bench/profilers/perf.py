"""CPU profile of one gateway worker and one plain nginx worker under the same load (Linux perf).

    python -m bench.profilers.perf [--seconds 5] [--concurrency 32]

Starts the backends, the gateway (tests/gateway/runner.py) and plain nginx as the benchmark does,
drives each with wrk, samples its worker with `perf record -g`, and prints where the worker's
CPU goes by shared object (kernel, nginx, LuaJIT, JIT code, libc, libcrypto, PCRE) and the top
symbols. Needs `perf` (Debian: linux-perf) and perf_event access (root). Files: build/bench/perf/.
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
    a = p.parse_args(argv)
    perf = shutil.which("perf")
    if not perf:
        print("perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())

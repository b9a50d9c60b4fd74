"""Process plumbing for the benchmark: ports, CPU pinning, CPU time and memory from /proc."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from gateway.backends import wait_http as _wait_http  # tests/ is on sys.path (bench/__init__.py)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of pid (nginx workers of a master, uvicorn workers, ...)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(x) for x in task.read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants that exist now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen or not Path(f"/proc/{p}").exists():
            continue
        seen.append(p)
        todo += children(p)
    return seen


def pin(pids: list[int], cpus: set[int]) -> None:
    """What `taskset -a -p` does, for every thread of every process given."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                pass


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU seconds of the processes (all threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_mib(pids: list[int]) -> float:
    """Summed resident set size now, MiB (shared pages of nginx workers counted per process)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> int:
    """Poll url until it answers 2xx; return the last status (0: nothing answered)."""
    return _wait_http(url, timeout, ok=lambda status: 200 <= status < 300, proc=proc)


def stop(proc: subprocess.Popen | None, sig: int | None = None) -> None:
    if proc is None or proc.poll() is not None:
        return
    if sig is None:
        proc.terminate()
    else:
        proc.send_signal(sig)
    try:
        proc.wait(8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_text(cmd: list[str]) -> str:
    """stdout+stderr of a short command ('' when it cannot run): for version strings."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (p.stdout + p.stderr).strip()

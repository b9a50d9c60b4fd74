"""Load generators: wrk (Debian) for request/response arms, a raw-socket SSE client for streams."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway import rawhttp  # the gateway test harness's timestamping SSE client (bench/__init__.py)

from .procs import cpu_seconds, rss_mib

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_post.lua"


def wrk_binary() -> str:
    return shutil.which("wrk") or "/usr/bin/wrk"


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int  # connect/read/write/timeout errors and non-2xx/3xx answers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_req: float  # CPU of the proxy's processes per request (0 for the direct arm)
    backend_cpu_util: float  # the backend's CPU use during the run, in cores
    rss_mib: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def wrk(
    url: str,
    body_file: Path,
    *,
    connections: int,
    seconds: float,
    cpus: set[int],
    proxy_pids: list[int],
    backend_pids: list[int],
) -> WrkResult:
    """One wrk run (one thread, pinned): POST body_file to url with `connections` keep-alive connections."""
    cmd = [
        "taskset",
        "-c",
        ",".join(map(str, sorted(cpus))),
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file))
    cpu0, bcpu0, t0 = cpu_seconds(proxy_pids), cpu_seconds(backend_pids), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(proxy_pids) - cpu0
    bcpu = cpu_seconds(backend_pids) - bcpu0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-800:]} {proc.stderr[-800:]}")
    d = json.loads(line[len("BENCH_JSON ") :])
    n = d["requests"]
    errors = sum(d["errors"].values())
    if n == 0:
        raise RuntimeError(f"no request completed in {seconds} s (errors: {d['errors']})")
    return WrkResult(
        rps=n / (d["duration_us"] / 1e6),
        requests=n,
        errors=errors,
        p50_ms=d["p50"] / 1000,
        p90_ms=d["p90"] / 1000,
        p99_ms=d["p99"] / 1000,
        max_ms=d["max"] / 1000,
        cpu_ms_per_req=1000 * cpu / n if n and proxy_pids else 0.0,
        backend_cpu_util=bcpu / wall if wall else 0.0,
        rss_mib=rss_mib(proxy_pids),
    )


@dataclass
class StreamResult:
    first_event_ms: float  # request sent -> first SSE event (the role chunk) received
    gap_median_ms: float  # median gap between the role chunk and the 64 paced deltas
    gap_min_ms: float
    bursts: int  # gaps under a quarter of the pacing interval: events that arrived together
    frames: int  # SSE events received
    complete: bool  # the chunked body ended properly and the last event was [DONE]
    content: str  # the deltas' text joined (compared with the direct arm's: nothing lost or reordered)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def stream(
    host: str, port: int, path: str, body: dict, *, deltas: int, interval_ms: float, headers: dict | None = None
) -> StreamResult:
    t0 = time.monotonic()
    resp = rawhttp.request(host, port, "POST", path, body, headers=headers, timeout=30)
    if resp.status != 200:
        raise RuntimeError(f"stream answered {resp.status}: {resp.body[:300]!r}")
    times = [t for t, _ in resp.events]
    paced = times[: deltas + 1]  # role chunk + the paced deltas; the tail follows at once
    gaps = [(b - a) * 1000 for a, b in zip(paced, paced[1:])]
    data = resp.data
    return StreamResult(
        first_event_ms=(times[0] - t0) * 1000 if times else float("nan"),
        gap_median_ms=statistics.median(gaps) if gaps else float("nan"),
        gap_min_ms=min(gaps) if gaps else float("nan"),
        bursts=sum(1 for g in gaps if g < interval_ms / 4),
        frames=len(resp.events),
        complete=resp.complete and bool(data) and data[-1] == "[DONE]",
        content=_content(data),
    )


def _content(data: list[str]) -> str:
    out = []
    for d in data:
        try:
            for choice in json.loads(d).get("choices") or []:
                out.append((choice.get("delta") or {}).get("content") or "")
        except (ValueError, AttributeError):
            pass
    return "".join(out)

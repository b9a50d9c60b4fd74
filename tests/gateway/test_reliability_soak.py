"""Soak: concurrent streams through the real nginx for a while, zero errors, flat memory and fds.

Short in `nox -s gateway` (GATEWAY_SOAK_SECONDS, default 20); `nox -s soak` runs it for 600 s.
Memory is the summed RSS of the nginx workers, sampled every second; the mean of the last
quarter may not exceed the mean of the first quarter (after a warm-up) by more than the
allowance, and the open file descriptors of the workers must come back to where they were.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import pytest

from . import rawhttp
from .backends import MockBackend

SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("GATEWAY_SOAK_CLIENTS", "12"))
DELTAS, INTERVAL_MS = 16, 10
# RSS growth allowed between the first and the last quarter: LuaJIT's GC and nginx pools
# settle in steps; a leak of one buffer per request grows far past this over minutes.
ALLOWED_GROWTH_KB = float(os.environ.get("GATEWAY_SOAK_ALLOWED_GROWTH_KB", "4096"))


def workers(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return [int(p) for p in fh.read().split()]


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


@pytest.fixture(scope="module")
def soak_backend(tmp_path_factory):
    backend = MockBackend(
        "--model",
        "org/Alpha-7B",
        "--served-model-name",
        "alpha",
        "org/Alpha-7B",
        "alpha-latest",
        log_dir=tmp_path_factory.mktemp("soak-mock"),
    )
    backend.start()
    yield backend
    backend.stop()


def test_soak_concurrent_streams_zero_errors_flat_memory(gateway_factory, soak_backend):
    gw = gateway_factory({"routing": {"endpoints": {"alpha": soak_backend.address}}}, name="soak")
    pids = workers(gw.proc.pid)
    assert pids, "no nginx workers"
    fds_before = fds(pids)
    stop = threading.Event()
    errors: list[str] = []
    counts = [0] * CLIENTS
    lock = threading.Lock()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 4 == 0:  # a non-streaming request now and then
                    body = {"model": "alpha-latest", "input": "x" * (n % 512)}
                    resp = rawhttp.request("127.0.0.1", gw.port, "POST", "/v1/embeddings", body, timeout=20)
                    ok = resp.status == 200 and resp.complete and resp.headers.get("x-gateway-model") == "alpha"
                else:
                    body = {
                        "model": "alpha",
                        "stream": True,
                        "messages": [{"role": "user", "content": "hi"}],
                        "mock": {"chunks": DELTAS, "interval_ms": INTERVAL_MS},
                    }
                    resp = rawhttp.request("127.0.0.1", gw.port, "POST", "/v1/chat/completions", body, timeout=20)
                    ok = (
                        resp.status == 200
                        and resp.complete
                        and len(resp.events) == DELTAS + 3
                        and resp.data[-1] == "[DONE]"
                    )
                if not ok:
                    with lock:
                        errors.append(
                            f"client {i} #{n}: {resp.status} complete={resp.complete} "
                            f"events={len(resp.events)} {resp.body[:200]!r}"
                        )
            except Exception as exc:
                with lock:
                    errors.append(f"client {i} #{n}: {exc!r}")
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples: list[tuple[float, int]] = []
    while time.monotonic() - t0 < SECONDS:
        time.sleep(1.0)
        assert gw.proc.poll() is None, f"nginx exited during the soak{gw.context()}"
        assert workers(gw.proc.pid) == pids, "a worker was replaced (crash?) during the soak" + gw.context()
        samples.append((time.monotonic() - t0, rss_kb(pids)))
    stop.set()
    for t in threads:
        t.join(30)
    total = sum(counts)
    assert not errors, f"{len(errors)} of {total} requests failed:\n" + "\n".join(errors[:20]) + gw.context()
    assert total >= CLIENTS * SECONDS / 2 * 0.5, f"only {total} requests in {SECONDS:.0f} s: the gateway stalled"
    # Memory: drop the first fifth as warm-up, compare the first and the last quarter of the rest.
    rest = [kb for _, kb in samples[max(1, len(samples) // 5) :]]
    quarter = max(1, len(rest) // 4)
    first, last = statistics.mean(rest[:quarter]), statistics.mean(rest[-quarter:])
    assert last - first <= ALLOWED_GROWTH_KB, (
        f"nginx worker RSS grew {last - first:.0f} kB ({first:.0f} -> {last:.0f} kB) during the soak; "
        f"samples (s, kB): {samples}"
    )
    # File descriptors come back (no leaked upstream or temp-file fds); idle keepalive ones may stay.
    time.sleep(1.0)
    keepalive = 2 * len(pids) * 64  # nginx.upstreamKeepalive per worker and upstream, generously
    assert fds(pids) <= fds_before + keepalive, (fds_before, fds(pids))
    stats = soak_backend.stats()
    assert stats["disconnects"] == 0 and stats["streams_died"] == 0, stats
    print(f"soak: {total} requests in {SECONDS:.0f} s by {CLIENTS} clients, worker RSS {first:.0f} -> {last:.0f} kB")

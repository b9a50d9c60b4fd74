"""Progress lines for long steps: `[e2e +12s] step ...`, with a heartbeat while a step runs.

Everything long runs through `run()`, which polls the child and prints a line with the
elapsed time (and the last line the child wrote) every HEARTBEAT seconds, so a cold run
never sits silent for minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

HEARTBEAT = float(os.environ.get("LLM_CHARTS_HEARTBEAT", "15"))
_T0 = time.monotonic()


def _default_writer(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# pytest swaps this for a writer that bypasses output capture (tests/e2e/conftest.py sets it).
writer: Callable[[str], None] = _default_writer


def say(message: str) -> None:
    writer(f"[e2e +{time.monotonic() - _T0:5.0f}s] {message}")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Announce a step and report how long it took."""
    say(f"{name} ...")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"{name}: FAILED after {time.monotonic() - start:.0f}s")
        raise
    say(f"{name}: done in {time.monotonic() - start:.0f}s")


@contextlib.contextmanager
def exclusive(target: Path, what: str) -> Iterator[None]:
    """Hold `<target>.lock` while making `target`: `.ci/run`'s prebuild and the e2e (or two
    threads) build the same cached things, so the second waits for the first and then finds the
    result instead of building it again. Check for the result inside the block."""
    lock = target.with_name(target.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:  # flock is per open file: threads of one process exclude each other too
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{what}: another process or thread is making it ({lock}); waiting")
            start = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            say(f"{what}: its lock came free after {time.monotonic() - start:.0f}s")
        yield


def exclusively(target: Path, what: str) -> Callable:
    """Decorator: the function runs under exclusive(target, what)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with exclusive(target, what):
                return fn(*args, **kwargs)

        return locked

    return decorate


class CommandError(RuntimeError):
    def __init__(self, cmd: Sequence[str], rc: int, tail: str):
        self.cmd, self.rc, self.tail = list(cmd), rc, tail
        super().__init__(f"{' '.join(map(str, cmd))} exited {rc}:\n{tail}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(
    command: Sequence[str | os.PathLike],
    *,
    log: Path,
    name: str | None = None,
    env: dict | None = None,
    cwd: str | os.PathLike | None = None,
    stdin: int | None = None,
    timeout: float | None = None,
) -> None:
    """Run a long command with its output in `log`, printing a heartbeat while it runs."""
    cmd = [str(c) for c in command]
    name = name or Path(cmd[0]).name
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
        )
        next_beat = start + HEARTBEAT
        while True:
            try:
                rc = proc.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if timeout and now - start > timeout:
                    proc.kill()
                    proc.wait()
                    raise CommandError(cmd, -9, f"timed out after {timeout:.0f}s\n{_tail(log)}") from None
                if now >= next_beat:
                    lines = [ln for ln in _tail(log, 5).splitlines() if ln.strip() and not ln.startswith("$ ")]
                    last = lines[-1][:100] if lines else ""
                    say(f"  {name}: still running ({now - start:.0f}s) {last}")
                    next_beat = now + HEARTBEAT
    if rc != 0:
        raise CommandError(cmd, rc, f"(log: {log})\n{_tail(log)}")


def wait_for(
    what: str,
    check: Callable[[], object],
    *,
    timeout: float,
    interval: float = 1.0,
    detail: Callable[[], str] | None = None,
) -> object:
    """Poll `check` until it returns something truthy; heartbeat while waiting."""
    start = time.monotonic()
    next_beat = start + HEARTBEAT
    last_exc: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        now = time.monotonic()
        if now - start > timeout:
            extra = detail() if detail else (repr(last_exc) if last_exc else "")
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{extra}")
        if now >= next_beat:
            say(f"  waiting for {what} ({now - start:.0f}s)")
            next_beat = now + HEARTBEAT
        time.sleep(interval)

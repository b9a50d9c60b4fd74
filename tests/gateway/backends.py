"""Mock OpenAI backends (images/mock-openai/mock_openai.py) as local processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MOCK = REPO / "images" / "mock-openai" / "mock_openai.py"


def free_port() -> int:
    """A TCP port nothing listens on right now (for nginx, which cannot report the one it got)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port that refuses connections: a backend that is down."""
    return free_port()


class MockBackend:
    """One mock server on 127.0.0.1; `address` is host:port, `backend_id` what it reports in X-Mock-Backend."""

    def __init__(self, *args: str, log_dir: Path, host: str = "127.0.0.1"):
        self.args = list(args)
        self.host = host  # any 127.0.0.0/8 address: several "pods" on one port each
        self.log_path = Path(log_dir) / f"mock-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.backend_id = ""

    def start(self, timeout: float = 10.0) -> MockBackend:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(MOCK), "--host", self.host, "--port", "0", "--mock-quiet", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("mock-openai: serving ") and " as " in line:
                    self.backend_id = line.split(" as ", 1)[1].split(" (")[0].strip()
                    self.port = int(self.backend_id.rsplit(":", 1)[1])
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mock backend {self.args} did not start:\n{self.log_path.read_text()}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _call(self, method: str, path: str) -> dict:
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=b"{}" if method == "POST" else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict:
        return self._call("GET", "/mock/stats")

    def reset(self) -> None:
        self._call("POST", "/mock/reset")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url: str, timeout: float = 10.0, ok=lambda status: status == 200, proc=None) -> int:
    """Poll a URL until `ok(status)`; return the last status (0 when nothing answered).

    With `proc` (a Popen), give up as soon as that process has exited.
    """
    deadline, status = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return status
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        if ok(status):
            return status
        time.sleep(0.05)
    return status

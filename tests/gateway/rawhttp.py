"""A raw-socket HTTP/1.1 client that timestamps each server-sent event as it arrives.

requests/urllib buffer and hide chunk boundaries; streaming tests need the arrival time of
every event, whether the stream ended with the terminating chunk, and byte-exact requests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[tuple[float, str]] = field(default_factory=list)  # (arrival time, event text)
    complete: bool = False  # the body ended as HTTP says (terminating chunk / full length)
    started: float = 0.0

    def json(self):
        return json.loads(self.body)

    @property
    def data(self) -> list[str]:
        """The `data:` payloads of the events, in order."""
        return [line[5:].strip() for _, ev in self.events for line in ev.split("\n") if line.startswith("data:")]

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.events]
        return [b - a for a, b in zip(times, times[1:])]


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict | None = None,
    timeout: float = 15.0,
    raw: bytes | None = None,
    close_after_events: int | None = None,
) -> Response:
    """Send one request (or `raw` bytes as they are) and read the whole answer."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    if raw is None:
        hdrs = {"Host": f"{host}:{port}", "Connection": "close"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        raw = head.encode("latin-1") + (body or b"")
    out = Response(started=time.monotonic())
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        _read_response(sock, out, close_after_events)
    return out


def chat_in_background(port: int, body: dict) -> Callable[[float], Response | None]:
    """POST /v1/chat/completions to 127.0.0.1:port in a thread (a stream in flight while a test
    stops or reloads nginx); returns wait(timeout) -> the whole response, None when unfinished."""
    result: dict[str, Response] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("resp", request("127.0.0.1", port, "POST", "/v1/chat/completions", body))
    )
    thread.start()

    def wait(timeout: float) -> Response | None:
        thread.join(timeout)
        return result.get("resp")

    return wait


def _read_response(sock: socket.socket, out: Response, close_after_events: int | None) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed before the response head: {buf!r}")
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    out.status = int(lines[0].split(" ")[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        out.headers[key] = f"{out.headers[key]}, {value.strip()}" if key in out.headers else value.strip()
    chunked = "chunked" in out.headers.get("transfer-encoding", "").lower()
    length = int(out.headers["content-length"]) if "content-length" in out.headers else None
    body, pending = bytearray(), b""  # pending: decoded bytes not yet split into events

    def feed(decoded: bytes) -> bool:
        nonlocal pending
        body.extend(decoded)
        pending += decoded
        now = time.monotonic()
        while b"\n\n" in pending:
            ev, pending = pending.split(b"\n\n", 1)
            out.events.append((now, ev.decode()))
        return close_after_events is not None and len(out.events) >= close_after_events

    def more() -> bytes:
        try:
            return sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return b""

    if chunked:
        while True:
            while b"\r\n" not in buf:
                data = more()
                if not data:
                    out.body = bytes(body)
                    return
                buf += data
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                out.complete = True
                break
            while len(buf) < size + 2:
                data = more()
                if not data:
                    feed(buf[:size])
                    out.body = bytes(body)
                    return
                buf += data
            stop = feed(buf[:size])
            buf = buf[size + 2 :]
            if stop:
                break
    else:
        if feed(buf):
            out.body = bytes(body)
            return
        while length is None or len(body) < length:
            data = more()
            if not data:
                break
            if feed(data):
                break
        out.complete = length is None or len(body) >= length
    out.body = bytes(body)

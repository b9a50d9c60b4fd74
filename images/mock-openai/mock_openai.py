#!/usr/bin/env python3
"""A fake OpenAI-compatible model server (vLLM / SGLang / llama-server stand-in) for gateway tests.

Python 3 standard library only: an asyncio HTTP/1.1 server with keep-alive and
chunked server-sent events in the exact OpenAI/vLLM streaming format.

    mock_openai.py --model Qwen/Qwen2.5-1.5B-Instruct --served-model-name qwen alias --port 8000
    mock_openai.py serve facebook/opt-125m --port 8000          # `vllm serve` form
    mock_openai.py --model /mnt/models/x.gguf --alias tiny --port 8080   # llama-server form (any model name)

Every response carries `X-Mock-Backend: <served name>@<hostname>:<port>`, and
JSON bodies carry the same string as `system_fingerprint`, so a test can prove
which backend answered; `X-Mock-Connection: <n>` numbers the TCP connection it
came on (1, 2, ... per server), so a test can prove connections are reused. Test controls ride in the request body under "mock"
(see README.md); GET /mock/stats returns counters, POST /mock/reset clears them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import json
import signal
import socket
import sys
import time
import uuid

SERVER = "mock-openai/1.0"
# The number of the connection a handler task serves (each connection has its own task).
CONNECTION = contextvars.ContextVar("connection", default=0)
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024
DEFAULT_CHUNKS = 8
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
               404: "NotFoundError", 413: "BadRequestError", 422: "BadRequestError",
               429: "RateLimitError", 503: "ServiceUnavailableError"}

# Flags of the real servers, so the chart's command lines are accepted as they are.
VALUE_FLAGS = [
    # vLLM
    "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--max-model-len",
    "--gpu-memory-utilization", "--revision", "--dtype", "--quantization", "-q", "--download-dir",
    "--max-num-seqs", "--max-num-batched-tokens", "--tokenizer", "--seed", "--api-key",
    "--chat-template", "--uvicorn-log-level", "--swap-space", "--kv-cache-dtype",
    "--tool-call-parser", "--reasoning-parser", "--data-parallel-size", "--generation-config",
    "--max-loras", "--max-lora-rank",
    # SGLang
    "--tp", "--tp-size", "--dp", "--mem-fraction-static", "--context-length", "--log-level",
    # llama-server
    "--ctx-size", "-c", "-ngl", "--n-gpu-layers", "--gpu-layers", "--threads", "-t",
    "--parallel", "-np", "--batch-size", "-b", "--ubatch-size", "-ub", "--cache-type-k",
    "--cache-type-v", "--temp", "--jinja-template", "--chat-template-file",
]
BOOL_FLAGS = [
    "--trust-remote-code", "--enable-prefix-caching", "--enforce-eager", "--disable-log-requests",
    "--disable-log-stats", "--enable-auto-tool-choice", "--no-enable-prefix-caching",
    "--disable-frontend-multiprocessing", "--enable-metrics", "--jinja", "--no-webui",
    "--flash-attn", "-fa", "--cont-batching", "--mlock", "--no-mmap", "--embedding", "--embeddings",
    "--enable-lora",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mock_openai.py", description=__doc__.split("\n\n")[0],
        epilog="Unknown flags are accepted and ignored with a warning.")
    p.add_argument("positional_model", nargs="?", help="model (vLLM positional form)")
    p.add_argument("--model", "-m", help="model id or path (vLLM, llama-server)")
    p.add_argument("--model-path", help="model id or path (SGLang)")
    p.add_argument("--served-model-name", nargs="+", default=[], help="names served (vLLM, SGLang)")
    p.add_argument("--alias", "-a", action="append", default=[], help="name served (llama-server)")
    p.add_argument("--lora-modules", nargs="+", default=[],
                   help="LoRA adapters served under their own names (vLLM: name=path or a JSON object)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--mock-startup-seconds", type=float, default=0.0,
                   help="answer /health (and inference) with 503 for this long after start, like a loading model")
    p.add_argument("--mock-any-model", action="store_true",
                   help="answer for any model name (the default as llama-server; as vLLM: 404 for names not served)")
    p.add_argument("--mock-backend-name",
                   help="name in X-Mock-Backend (default: <first served name>@<hostname>:<port>)")
    p.add_argument("--mock-quiet", action="store_true", help="no log line per request")
    for flag in VALUE_FLAGS:
        p.add_argument(flag, dest=None if flag.startswith("--") else "_" + flag.lstrip("-").replace("-", "_"),
                       help=argparse.SUPPRESS)
    for flag in BOOL_FLAGS:
        p.add_argument(flag, action="store_true",
                       dest=None if flag.startswith("--") else "_" + flag.lstrip("-").replace("-", "_"),
                       help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the real servers' command lines; unknown flags (and a value after them) are dropped."""
    argv = list(argv)
    if argv and argv[0] == "serve":  # `vllm serve MODEL ...`
        argv = argv[1:]
    parser = build_parser()
    known = {a for action in parser._actions for a in action.option_strings}
    kept, ignored, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg.startswith("-") and len(arg) > 1 and name not in known and not _is_number(arg):
            ignored.append(arg)
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                ignored.append(argv[i + 1])
                i += 1
        else:
            kept.append(arg)
        i += 1
    if ignored:
        print(f"mock-openai: warning: ignoring unknown arguments: {' '.join(ignored)}",
              file=sys.stderr, flush=True)
    args = parser.parse_args(kept)
    args.model_id = args.model or args.model_path or args.positional_model or "mock-model"
    args.served = args.served_model_name + args.alias or [args.model_id]
    # vLLM's --lora-modules: name=path, or {"name": ..., "path": ..., "base_model_name": ...}.
    args.adapters = {}
    for module in args.lora_modules:
        if module.startswith("{"):
            spec = json.loads(module)
            args.adapters[spec["name"]] = spec["path"]
        else:
            name, _, path = module.partition("=")
            args.adapters[name] = path
    # llama-server (--alias, or a .gguf --model; it has no --served-model-name) serves one model
    # and ignores the requested name; vLLM and SGLang answer 404 for a name they do not serve.
    args.llama_server = not args.served_model_name and (
        bool(args.alias) or (args.model or "").lower().endswith(".gguf"))
    args.any_model = args.mock_any_model or args.llama_server
    return args


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class Request:
    __slots__ = ("method", "path", "query", "version", "headers", "body")

    def __init__(self, method, path, query, version, headers, body):
        self.method, self.path, self.query, self.version = method, path, query, version
        self.headers, self.body = headers, body

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def keep_alive(self) -> bool:
        conn = self.header("connection").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


class MockServer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.port = args.port
        self.backend = args.mock_backend_name
        self.stats = self._empty_stats()
        self.quiet = args.mock_quiet
        self.started_wall = time.time()

    @staticmethod
    def _empty_stats() -> dict:
        return {"requests": {}, "requests_total": 0, "connections": 0, "chunks_sent": 0,
                "streams_started": 0, "streams_completed": 0, "streams_died": 0,
                "disconnects": 0, "in_flight": 0, "last_request_headers": {}}

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return time.monotonic() - self.started < self.args.mock_startup_seconds

    def fingerprint(self) -> str:
        return self.backend

    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(f"mock-openai {self.backend}: {msg}", file=sys.stderr, flush=True)

    # -- connection handling ---------------------------------------------------------------------
    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.stats["connections"] += 1
        CONNECTION.set(self.stats["connections"])
        try:
            while True:
                try:
                    req = await self.read_request(reader)
                except HTTPError as exc:
                    await self.send_json(writer, exc.status, self.error_body(exc.status, str(exc)),
                                         keep_alive=False)
                    break
                if req is None:
                    break
                self.stats["requests_total"] += 1
                self.stats["requests"][req.path] = self.stats["requests"].get(req.path, 0) + 1
                self.stats["in_flight"] += 1
                try:
                    keep = await self.dispatch(req, reader, writer)
                except ClientGone:
                    self.stats["disconnects"] += 1
                    self._log(f"{req.method} {req.path}: client went away")
                    break
                finally:
                    self.stats["in_flight"] -= 1
                if not (keep and req.keep_alive):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise HTTPError(400, "incomplete request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise HTTPError(431, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HTTPError(400, f"bad request line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        path, _, query = target.partition("?")
        te = headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked":
                raise HTTPError(501, f"transfer-encoding {te!r} not supported")
            body = await self.read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise HTTPError(400, "bad content-length") from None
            if length > MAX_BODY_BYTES:
                raise HTTPError(413, "body too large")
            body = await reader.readexactly(length) if length else b""
        return Request(method, path, query, version, headers, body)

    @staticmethod
    async def read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts, total = [], 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise HTTPError(413, "body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    # -- responses -------------------------------------------------------------------------------
    def base_headers(self, status: int, content_type: str, extra: dict | None = None) -> list[str]:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                 f"Content-Type: {content_type}", f"Server: {SERVER}",
                 f"X-Mock-Backend: {self.backend}", f"X-Mock-Connection: {CONNECTION.get()}"]
        for k, v in (extra or {}).items():
            lines.append(f"{k}: {v}")
        return lines

    async def send_json(self, writer, status: int, obj, *, keep_alive: bool = True,
                        headers: dict | None = None) -> None:
        if isinstance(obj, dict):
            obj.setdefault("system_fingerprint", self.fingerprint())
        body = json.dumps(obj).encode()
        lines = self.base_headers(status, "application/json", headers)
        lines += [f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    def error_body(self, status: int, message: str, param=None, code=None) -> dict:
        return {"error": {"message": message, "type": ERROR_TYPES.get(status, "InternalServerError"),
                          "param": param, "code": code if code is not None else status}}

    # -- routing ---------------------------------------------------------------------------------
    async def dispatch(self, req: Request, reader, writer) -> bool:
        """Answer one request; return False when the connection must close."""
        self._log(f"{req.method} {req.path} ({len(req.body)} bytes)")
        self.stats["last_request_headers"] = dict(req.headers)
        get_routes = {"/health": self.health, "/v1/models": self.models, "/mock/stats": self.get_stats,
                      "/ping": self.health}
        post_routes = {"/v1/chat/completions": self.chat, "/v1/completions": self.completions,
                       "/v1/embeddings": self.embeddings, "/v1/responses": self.responses,
                       "/tokenize": self.tokenize, "/detokenize": self.detokenize,
                       "/mock/reset": self.reset}
        if req.method == "GET" and req.path in get_routes:
            return await get_routes[req.path](req, writer)
        if req.method == "POST" and req.path in post_routes:
            if req.path.startswith("/mock/"):
                return await post_routes[req.path](req, writer)
            return await self.inference(req, reader, writer, post_routes[req.path])
        if req.path in get_routes or req.path in post_routes:
            await self.send_json(writer, 405, self.error_body(405, f"method {req.method} not allowed"))
            return True
        await self.send_json(writer, 404, self.error_body(404, f"no route for {req.path}"))
        return True

    async def health(self, req, writer) -> bool:
        if self.loading:
            await self.send_json(writer, 503, self.error_body(503, "Loading model", code=503))
        else:
            await self.send_json(writer, 200, {"status": "ok"})
        return True

    async def models(self, req, writer) -> bool:
        created = int(self.started_wall)
        data = [{"id": n, "object": "model", "created": created, "owned_by": "vllm",
                 "root": self.args.model_id, "parent": None, "max_model_len": 4096}
                for n in self.args.served]
        data += [{"id": n, "object": "model", "created": created, "owned_by": "vllm",
                  "root": path, "parent": self.args.served[0], "max_model_len": None}
                 for n, path in self.args.adapters.items()]
        await self.send_json(writer, 200, {"object": "list", "data": data})
        return True

    async def get_stats(self, req, writer) -> bool:
        await self.send_json(writer, 200, dict(self.stats, backend=self.backend,
                                               uptime_seconds=time.monotonic() - self.started))
        return True

    async def reset(self, req, writer) -> bool:
        in_flight = self.stats["in_flight"]
        self.stats = self._empty_stats()
        self.stats["in_flight"] = in_flight
        await self.send_json(writer, 200, {"reset": True})
        return True

    async def inference(self, req: Request, reader, writer, handler) -> bool:
        if req.header("content-type", "application/json").split(";")[0].strip().lower() != "application/json":
            await self.send_json(writer, 400, self.error_body(400, "Content-Type must be application/json"))
            return True
        try:
            body = json.loads(req.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            await self.send_json(writer, 400, self.error_body(400, f"invalid JSON body: {exc}"))
            return True
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        if mock.get("delay_ms"):
            await self.wait_or_gone(reader, mock["delay_ms"] / 1000.0)
        if mock.get("close"):
            writer.transport.abort()
            return False
        if self.loading:
            await self.send_json(writer, 503, self.error_body(503, "Loading model", code=503))
            return True
        if mock.get("status"):
            status = int(mock["status"])
            await self.send_json(writer, status, self.error_body(status, f"mock error {status}"),
                                 headers={"Retry-After": "1"} if status in (429, 503) else None)
            return True
        model = body.get("model")
        if model is None:
            model = self.args.served[0]
        elif model not in self.args.served and model not in self.args.adapters and not self.args.any_model:
            await self.send_json(writer, 404, self.error_body(
                404, f"The model `{model}` does not exist.", param="model", code=404))
            return True
        ctx = {"req": req, "body": body, "mock": mock, "model": model, "reader": reader,
               "echo": self.echo(req) if mock.get("echo_headers") else None}
        return await handler(ctx, writer)

    def echo(self, req: Request) -> dict:
        return {"headers": dict(req.headers), "method": req.method, "path": req.path,
                "query": req.query, "http_version": req.version, "body_bytes": len(req.body)}

    async def wait_or_gone(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Sleep, but notice a client that hangs up meanwhile (raises ClientGone)."""
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except asyncio.TimeoutError:
            return
        if not data:
            raise ClientGone()
        # Pipelined bytes during a delay: keep them (cannot un-read; HTTP pipelining is not supported).

    # -- OpenAI endpoints ------------------------------------------------------------------------
    @staticmethod
    def words(n: int) -> list[str]:
        return [f"tok{i} " for i in range(n)]

    def envelope(self, ctx, obj: str, prefix: str) -> dict:
        out = {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": obj, "created": int(time.time()),
               "model": ctx["model"], "system_fingerprint": self.fingerprint()}
        if ctx["echo"] is not None:
            out["mock_echo"] = ctx["echo"]
        return out

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @staticmethod
    def prompt_tokens(body: dict) -> int:
        text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
        return max(1, len(text) // 4)

    def n_chunks(self, ctx) -> int:
        mock = ctx["mock"]
        n = mock.get("chunks")
        if n is None:
            n = ctx["body"].get("max_tokens") or ctx["body"].get("max_completion_tokens") or DEFAULT_CHUNKS
            n = min(int(n), DEFAULT_CHUNKS)
        return int(n)

    async def chat(self, ctx, writer) -> bool:
        n = self.n_chunks(ctx)
        if ctx["body"].get("stream"):
            base = self.envelope(ctx, "chat.completion.chunk", "chatcmpl")
            base.pop("mock_echo", None)
            first = dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}])
            if ctx["echo"] is not None:
                first["mock_echo"] = ctx["echo"]
            deltas = [dict(base, choices=[{"index": 0, "delta": {"content": w}, "logprobs": None,
                                           "finish_reason": None}]) for w in self.words(n)]
            finish = dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
            tail = [finish]
            if (ctx["body"].get("stream_options") or {}).get("include_usage"):
                tail.append(dict(base, choices=[], usage=self.usage(self.prompt_tokens(ctx["body"]), n)))
            return await self.stream(ctx, writer, [first], deltas, tail)
        out = self.envelope(ctx, "chat.completion", "chatcmpl")
        out["choices"] = [{"index": 0, "message": {"role": "assistant", "content": "".join(self.words(n)),
                                                   "tool_calls": []},
                           "logprobs": None, "finish_reason": "stop"}]
        out["usage"] = self.usage(self.prompt_tokens(ctx["body"]), n)
        await self.send_json(writer, 200, out)
        return True

    async def completions(self, ctx, writer) -> bool:
        n = self.n_chunks(ctx)
        if ctx["body"].get("stream"):
            base = self.envelope(ctx, "text_completion", "cmpl")
            echo = base.pop("mock_echo", None)
            deltas = [dict(base, choices=[{"index": 0, "text": w, "logprobs": None, "finish_reason": None,
                                           "stop_reason": None}]) for w in self.words(n)]
            if echo is not None and deltas:
                deltas[0]["mock_echo"] = echo
            finish = dict(base, choices=[{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop",
                                          "stop_reason": None}])
            return await self.stream(ctx, writer, [], deltas, [finish])
        out = self.envelope(ctx, "text_completion", "cmpl")
        out["choices"] = [{"index": 0, "text": "".join(self.words(n)), "logprobs": None,
                           "finish_reason": "stop", "stop_reason": None}]
        out["usage"] = self.usage(self.prompt_tokens(ctx["body"]), n)
        await self.send_json(writer, 200, out)
        return True

    async def embeddings(self, ctx, writer) -> bool:
        inputs = ctx["body"].get("input", "")
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = int(ctx["body"].get("dimensions") or 8)
        data = []
        for i, item in enumerate(inputs):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(digest[j % 32] / 255.0 - 0.5, 6) for j in range(dims)]})
        out = {"id": f"embd-{uuid.uuid4().hex[:24]}", "object": "list", "created": int(time.time()),
               "model": ctx["model"], "data": data,
               "usage": {"prompt_tokens": self.prompt_tokens(ctx["body"]), "total_tokens":
                         self.prompt_tokens(ctx["body"])}}
        if ctx["echo"] is not None:
            out["mock_echo"] = ctx["echo"]
        await self.send_json(writer, 200, out)
        return True

    async def responses(self, ctx, writer) -> bool:
        n = self.n_chunks(ctx)
        rid, mid = f"resp_{uuid.uuid4().hex[:24]}", f"msg_{uuid.uuid4().hex[:24]}"
        text = "".join(self.words(n))
        usage = {"input_tokens": self.prompt_tokens(ctx["body"]), "output_tokens": n,
                 "total_tokens": self.prompt_tokens(ctx["body"]) + n}

        def response(status: str, done: bool) -> dict:
            out = {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                   "model": ctx["model"], "system_fingerprint": self.fingerprint(),
                   "output": [{"type": "message", "id": mid, "status": "completed", "role": "assistant",
                               "content": [{"type": "output_text", "text": text, "annotations": []}]}]
                   if done else [], "usage": usage if done else None}
            if ctx["echo"] is not None:
                out["mock_echo"] = ctx["echo"]
            return out

        if ctx["body"].get("stream"):
            head = [("response.created", {"type": "response.created", "sequence_number": 0,
                                          "response": response("in_progress", False)})]
            deltas = [("response.output_text.delta",
                       {"type": "response.output_text.delta", "item_id": mid, "output_index": 0,
                        "content_index": 0, "delta": w, "sequence_number": i + 1})
                      for i, w in enumerate(self.words(n))]
            tail = [("response.completed", {"type": "response.completed", "sequence_number": n + 1,
                                            "response": response("completed", True)})]
            return await self.stream(ctx, writer, head, deltas, tail, done_marker=False)
        await self.send_json(writer, 200, response("completed", True))
        return True

    async def tokenize(self, ctx, writer) -> bool:
        body = ctx["body"]
        text = body.get("prompt")
        if text is None:
            text = "".join(str(m.get("content", "")) for m in body.get("messages") or [])
        tokens = [b for b in str(text).encode()]
        out = {"count": len(tokens), "max_model_len": 4096, "tokens": tokens, "token_strs": None}
        if ctx["echo"] is not None:
            out["mock_echo"] = ctx["echo"]
        await self.send_json(writer, 200, out)
        return True

    async def detokenize(self, ctx, writer) -> bool:
        tokens = ctx["body"].get("tokens") or []
        try:
            prompt = bytes(int(t) % 256 for t in tokens).decode("utf-8", "replace")
        except (TypeError, ValueError):
            await self.send_json(writer, 400, self.error_body(400, "tokens must be integers", param="tokens"))
            return True
        out = {"prompt": prompt}
        if ctx["echo"] is not None:
            out["mock_echo"] = ctx["echo"]
        await self.send_json(writer, 200, out)
        return True

    # -- streaming -------------------------------------------------------------------------------
    async def stream(self, ctx, writer, head: list, deltas: list, tail: list, *, done_marker: bool = True) -> bool:
        """Send SSE events: head at once, one delta every interval_ms, then tail and [DONE].

        mock.die_after_chunks=K closes the connection after K events, without a terminating chunk.
        """
        mock, req, reader = ctx["mock"], ctx["req"], ctx["reader"]
        interval = float(mock.get("interval_ms", 20)) / 1000.0
        die_after = mock.get("die_after_chunks")
        chunked = req.version == "HTTP/1.1"
        # No X-Accel-Buffering here: vLLM sends none, and nginx would obey it and hide a gateway that buffers.
        lines = self.base_headers(200, "text/event-stream", {"Cache-Control": "no-cache"})
        lines.append("Transfer-Encoding: chunked" if chunked else "Connection: close")
        if chunked and not req.keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.stats["streams_started"] += 1
        gone = asyncio.ensure_future(reader.read(1))  # EOF here = the client hung up
        sent = 0

        def client_gone() -> bool:
            return gone.done() and (gone.cancelled() or gone.exception() is not None or gone.result() == b"")

        async def send(event) -> None:
            nonlocal sent
            if client_gone():
                raise ClientGone()
            if isinstance(event, tuple):
                payload = f"event: {event[0]}\ndata: {json.dumps(event[1])}\n\n".encode()
            elif isinstance(event, bytes):
                payload = event
            else:
                payload = f"data: {json.dumps(event)}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
            try:
                await writer.drain()
            except ConnectionError:
                raise ClientGone() from None
            sent += 1
            self.stats["chunks_sent"] += 1
            if die_after is not None and sent >= int(die_after):
                self.stats["streams_died"] += 1
                raise _Die()

        loop = asyncio.get_running_loop()
        try:
            for event in head:
                await send(event)
            start = loop.time()
            for i, event in enumerate(deltas):
                # Absolute schedule: pacing does not drift with the time spent writing.
                delay = start + (i + 1) * interval - loop.time()
                if delay > 0:
                    if gone.done():
                        await asyncio.sleep(delay)
                    else:
                        await asyncio.wait([gone], timeout=delay)
                await send(event)
            for event in tail:
                await send(event)
            if done_marker:
                await send(b"data: [DONE]\n\n")
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            self.stats["streams_completed"] += 1
            if self.args.llama_server and req.keep_alive:
                # As llama-server (build 11669) does: it closes the connection after a stream while
                # its headers promised keep-alive. A proxy that reuses the connection at once sends
                # its next request into a closed socket.
                self.stats["closed_after_stream"] = self.stats.get("closed_after_stream", 0) + 1
                return False
        except _Die:
            writer.transport.abort()
            return False
        finally:
            gone.cancel()
            try:
                await gone
            except (asyncio.CancelledError, ConnectionError):
                pass
        return chunked


class _Die(Exception):
    pass


async def serve(args: argparse.Namespace) -> None:
    server_obj = MockServer(args)
    server = await asyncio.start_server(server_obj.handle_connection, args.host, args.port,
                                        limit=MAX_HEADER_BYTES, reuse_address=True, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    server_obj.port = port
    if not server_obj.backend:
        server_obj.backend = f"{args.served[0]}@{socket.gethostname()}:{port}"
    print(f"mock-openai: serving {', '.join(args.served)} on {args.host}:{port} as {server_obj.backend}"
          + (" (any model name)" if args.any_model else "")
          + (f" (loading for {args.mock_startup_seconds:g}s)" if args.mock_startup_seconds else ""),
          file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

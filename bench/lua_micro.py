"""Micro-benchmark of the gateway's body hot path inside nginx's LuaJIT (Debian nginx + lua module).

    python -m bench.lua_micro

Loads charts/api-gateway/files/lua/gateway_body.lua as the gateway does (read only) and times, per
call and body: the gateway's model scanner (`body.model`), a full `cjson.decode` (what a naive
gateway would do), and `string.find` of `"model"` (a lower bound). Bodies: the benchmark's
1 KB / 1 MB chat requests (one long prompt string, `model` last as the OpenAI SDK sends it), and
"chatty" ones: many short messages with escaped quotes, newlines and \\u escapes.
Output: a table on stdout and build/bench/lua_micro.json.
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import yaml

from . import procs
from .arms import UNPRIVILEGED, _nginx
from .report import _table
from .run import OUT, REPO, chat_body, ensure_system_packages

LUA_DIR = REPO / "charts" / "api-gateway" / "files" / "lua"


def chatty_body(size: int, model: str) -> bytes:
    rnd = random.Random(7)
    words = ["the", "model", "said", '"quoted"', "line\nbreak", "caf\u00e9", "tab\there", "{json}", "[1,2]", "\\path"]
    messages, total = [], 0
    while total < size:
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 60)))
        messages.append({"role": rnd.choice(["user", "assistant"]), "content": text})
        total += len(json.dumps(messages[-1])) + 1
    return json.dumps({"messages": messages, "temperature": 0.2, "max_tokens": 64, "stream": False,
                       "model": model}).encode()  # ensure_ascii: \u escapes as Python's SDK sends them


# The candidate fix measured next to the original: skip_ws with byte() instead of a pattern
# (LuaJIT does not compile string.find with a pattern; every call leaves the trace).
SKIP_WS_ORIG = """local function skip_ws(s, i)
    local _, e = find(s, "^[ \\t\\r\\n]*", i)
    return e + 1
end"""
SKIP_WS_FAST = """local function skip_ws(s, i)
    local c = byte(s, i)
    while c == 32 or c == 10 or c == 13 or c == 9 do
        i = i + 1
        c = byte(s, i)
    end
    return i
end"""


def patched_body_module(dest: Path) -> bool:
    """gateway_body.lua with SKIP_WS_FAST, as module gateway_body_fastws; False when the original changed."""
    src = (LUA_DIR / "gateway_body.lua").read_text()
    if SKIP_WS_ORIG not in src:
        return False
    (dest / "gateway_body_fastws.lua").write_text(src.replace(SKIP_WS_ORIG, SKIP_WS_FAST))
    return True


def main(argv: list[str] | None = None) -> int:
    ensure_system_packages()
    sys.path.insert(0, str(REPO / "tests"))
    from gateway.runner import DEBIAN_VALUES, debian_overrides, deep_merge

    deb = deep_merge(yaml.safe_load(DEBIAN_VALUES.read_text()), debian_overrides())["nginx"]
    root = OUT / "lua-micro"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    (root / "bodies").mkdir(parents=True)
    bodies = {
        "1KB prompt": chat_body(1024, "fast-b"),
        "1MB prompt": chat_body(1024 * 1024, "fast-b"),
        "4KB chatty": chatty_body(4 * 1024, "fast-b"),
        "100KB chatty": chatty_body(100 * 1024, "fast-b"),
        "1MB chatty": chatty_body(1024 * 1024, "fast-b"),
    }
    for i, (name, data) in enumerate(bodies.items()):
        (root / "bodies" / f"{i}.json").write_bytes(data)
    names = list(bodies)
    port = procs.free_port()
    (root / "lua").mkdir()
    patched = patched_body_module(root / "lua")
    lua = textwrap.dedent(f"""\
        local body = require "gateway_body"
        local fast = {"require 'gateway_body_fastws'" if patched else "nil"}
        local cjson = require "cjson.safe"
        local find = string.find
        local names = {json.dumps(names).replace("[", "{").replace("]", "}")}
        local out = {{}}
        local function time(fn, s)
            local n, t0 = 0, os.clock()
            repeat
                for _ = 1, 20 do fn(s) end
                n = n + 20
            until os.clock() - t0 > 0.3
            return (os.clock() - t0) / n * 1e6
        end
        for i, name in ipairs(names) do
            local f = assert(io.open("{root}/bodies/" .. (i - 1) .. ".json", "rb"))
            local s = f:read("*a")
            f:close()
            local model, err = body.model(s)
            assert(model == "fast-b", "scanner returned " .. tostring(model) .. " " .. tostring(err and err.message))
            out[#out + 1] = {{ name = name, bytes = #s,
                scan_us = time(body.model, s),
                scan_fastws_us = fast and (assert(fast.model(s) == "fast-b") and time(fast.model, s)) or nil,
                decode_us = time(cjson.decode, s),
                find_us = time(function(x) return find(x, '"model"', 1, true) end, s) }}
        end
        ngx.say(cjson.encode(out))
    """)
    (root / "micro.lua").write_text(lua)
    conf = "".join(f"load_module {m};\n" for m in deb["loadModules"]) + textwrap.dedent(f"""\
        daemon off;
        master_process off;
        pid {root}/nginx.pid;
        events {{ }}
        http {{
          access_log off;
          client_body_temp_path {root}/cb;
          proxy_temp_path {root}/p;
          fastcgi_temp_path {root}/f;
          uwsgi_temp_path {root}/u;
          scgi_temp_path {root}/s;
          lua_package_path "{LUA_DIR}/?.lua;{root}/lua/?.lua;{deb['luaPackagePath']};;";
          lua_package_cpath "{deb['luaPackageCPath']};;";
          server {{
            listen 127.0.0.1:{port};
            location / {{ content_by_lua_file {root}/micro.lua; }}
          }}
        }}
        """)
    (root / "nginx.conf").write_text(conf)
    (root / "error.log").touch()
    kw = {}
    if os.geteuid() == 0:
        for p in [root, *root.rglob("*")]:
            os.chown(p, UNPRIVILEGED, UNPRIVILEGED)
        kw = {"user": UNPRIVILEGED, "group": UNPRIVILEGED, "extra_groups": []}
    err = (root / "error.log").open("wb")
    proc = subprocess.Popen([_nginx(), "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
                            stdout=err, stderr=err, **kw)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:  # until the port accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=120) as resp:
            rows = json.loads(resp.read())
    except Exception:
        print((root / "error.log").read_text()[-2000:], file=sys.stderr)
        raise
    finally:
        procs.stop(proc)
    table = [[r["name"], str(r["bytes"]), f"{r['scan_us']:.1f}",
              f"{r['scan_fastws_us']:.1f}" if r.get("scan_fastws_us") else "-",
              f"{r['decode_us']:.1f}", f"{r['find_us']:.2f}", f"{r['decode_us'] / r['scan_us']:.1f}x"] for r in rows]
    print(_table(["body", "bytes", "gateway scan us", "scan, byte() skip_ws us", "cjson.decode us",
                  "find \"model\" us", "decode / scan"], table))
    if not patched:
        print("(the byte-loop skip_ws is already in gateway_body.lua: its column is the scanner as shipped)")
    (OUT / "lua_micro.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

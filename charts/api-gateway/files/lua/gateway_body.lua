-- The request body: read with a size cap and scanned once, without decoding it
-- and without ever holding a large body in Lua memory. A body nginx kept in
-- memory (up to client_body_buffer_size) is scanned in place; a body it spilled
-- to a temp file is scanned through one fixed 64 KiB window per worker (pread),
-- so a 64 MiB prompt costs 64 KiB, not 64 MiB, of the worker's heap.
--
-- The scanner checks the JSON structure of the whole body (objects, arrays,
-- strings, numbers, literals) and builds Lua values only for what routing needs:
-- the top-level "model", "stream", the session field, and the span of the prompt
-- ("messages" up to the first user message, "prompt" or "input") for prefix
-- affinity. Nested strings are skipped, not validated: the model server does that.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local errors = require "gateway_errors"

local ngx = ngx
local C = ffi.C
local cast = ffi.cast
local ffi_string = ffi.string
local tonumber = tonumber
local type = type
local pcall = pcall
local decode = cjson.decode

for _, decl in ipairs({
    "void *memchr(const void *s, int c, size_t n);",
    "int memcmp(const void *s1, const void *s2, size_t n);",
    "int open(const char *pathname, int flags, ...);",
    "int close(int fd);",
    "long pread(int fd, void *buf, size_t count, long offset);",
    "long lseek(int fd, long offset, int whence);",
}) do
    pcall(ffi.cdef, decl) -- another module may have declared it already
end

local _M = {}

-- Longest model name accepted (the catalog allows 256-character aliases).
_M.MAX_MODEL_LENGTH = 256
-- Longest session key taken from a body field; a longer one is no key at all.
_M.MAX_SESSION_LENGTH = 1024
_M.WINDOW = 65536
local MAX_DEPTH = 128
-- The request's cap on generated tokens, by API (chat, completions; chat's newer name; Responses).
local MAX_TOKENS = { max_tokens = true, max_completion_tokens = true, max_output_tokens = true }
local O_RDONLY, SEEK_END = 0, 2

local B_QUOTE, B_BACKSLASH = 34, 92
local B_LBRACE, B_RBRACE, B_LBRACKET, B_RBRACKET = 123, 125, 91, 93
local B_COLON, B_COMMA = 58, 44

-- One window per worker: a scan never yields, so requests never share it at once.
local window = ffi.new("uint8_t[?]", _M.WINDOW)
local u8p = ffi.typeof("const uint8_t *")

local function invalid(what)
    return nil, errors.new(400, "The request body is not valid JSON: " .. what .. ".", "invalid_json")
end

-- A source is the body as bytes: p points at the window's first byte, which is
-- the body's byte `base` (0-based); n bytes are in the window; size in all.
local function memory_source(data)
    return { p = cast(u8p, data), base = 0, n = #data, size = #data, keep = data }
end

-- Moves the window of a file source so that it starts at byte i; false at the end.
local function refill(src, i)
    if not src.fd or i >= src.size then
        return false
    end
    local got = tonumber(C.pread(src.fd, window, _M.WINDOW, i))
    if got <= 0 then
        src.failed = true
        return false
    end
    src.p, src.base, src.n = window, i, got
    return true
end

-- Byte i (0-based), or nil past the end.
local function at(src, i)
    local off = i - src.base
    if off >= 0 and off < src.n then
        return src.p[off]
    end
    if i >= src.size or i < 0 or not refill(src, i) then
        return nil
    end
    return src.p[0]
end

-- Bytes i .. j-1 as a Lua string (j - i is small: a key, the model, a prompt prefix).
local function text(src, i, j)
    local len = j - i
    if len <= 0 then
        return ""
    end
    local off = i - src.base
    if off >= 0 and off + len <= src.n then
        return ffi_string(src.p + off, len)
    end
    local tmp = ffi.new("uint8_t[?]", len)
    local got = tonumber(C.pread(src.fd, tmp, len, i))
    if got ~= len then
        src.failed = true
        return ""
    end
    return ffi_string(tmp, len)
end

-- The common cases have no loop: a loop that a trace enters but that rarely
-- iterates makes LuaJIT abort the trace ("inner loop in root trace") and, after
-- a few tries, leave the caller interpreted. Runs of whitespace (pretty-printed
-- bodies) and strings with escapes go to the looping versions.
local function is_ws(c)
    return c == 32 or c == 10 or c == 13 or c == 9
end

local function skip_ws_run(src, i)
    local c = at(src, i)
    while is_ws(c) do
        i = i + 1
        c = at(src, i)
    end
    return i, c
end

local function skip_ws(src, i)
    local c = at(src, i)
    if not is_ws(c) then
        return i, c
    end
    c = at(src, i + 1) -- one space: what json.dumps writes after ',' and ':'
    if not is_ws(c) then
        return i + 1, c
    end
    return skip_ws_run(src, i + 2)
end

-- Index after the string that starts at i (a quote): the next quote that no
-- backslash escapes, found with memchr. Escapes are not checked here. The
-- quote's position is kept between backslashes, so the search stays linear.
local function skip_string_escaped(src, i)
    local quote, quote_base = -1, -1 -- the next quote (-1: none) from a search in the window at quote_base
    while true do
        if at(src, i) == nil then
            return nil
        end
        local p, base, n = src.p, src.base, src.n
        local off = i - base
        if quote_base ~= base or (quote ~= -1 and quote < i) then
            local q = C.memchr(p + off, B_QUOTE, n - off)
            quote = q ~= nil and base + tonumber(cast(u8p, q) - p) or -1
            quote_base = base
        end
        local b = C.memchr(p + off, B_BACKSLASH, (quote ~= -1 and quote or base + n) - i)
        if b ~= nil then
            i = base + tonumber(cast(u8p, b) - p) + 2
        elseif quote ~= -1 then
            return quote + 1
        else
            i = base + n
        end
    end
end

local function skip_string(src, i)
    i = i + 1
    if at(src, i) == nil then
        return nil
    end
    -- Common case: the closing quote is in the window and no backslash is before it.
    local p, base, n = src.p, src.base, src.n
    local off = i - base
    local q = C.memchr(p + off, B_QUOTE, n - off)
    if q ~= nil then
        local len = tonumber(cast(u8p, q) - (p + off))
        if C.memchr(p + off, B_BACKSLASH, len) == nil then
            return i + len + 1
        end
    end
    return skip_string_escaped(src, i)
end

local HEX = {}
for _, c in ipairs({ 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 65, 66, 67, 68, 69, 70, 97, 98, 99, 100, 101, 102 }) do
    HEX[c] = true
end
local ESCAPES = { [34] = true, [92] = true, [47] = true, [98] = true, [102] = true, [110] = true, [114] = true,
                  [116] = true }

-- Index after the string at i, checking escapes and control characters (for
-- top-level keys and the values the gateway interprets).
local function scan_string_strict(src, i)
    i = i + 1
    while true do
        local c = at(src, i)
        if c == nil or c < 32 then
            return nil
        elseif c == B_QUOTE then
            return i + 1
        elseif c == B_BACKSLASH then
            local e = at(src, i + 1)
            if e == 117 then -- \uXXXX
                for k = 2, 5 do
                    if not HEX[at(src, i + k)] then
                        return nil
                    end
                end
                i = i + 6
            elseif ESCAPES[e] then
                i = i + 2
            else
                return nil
            end
        else
            i = i + 1
        end
    end
end

-- The value of the JSON string token i .. j-1 (quotes included).
local function string_value(src, i, j)
    local raw = text(src, i + 1, j - 1)
    if not raw:find("\\", 1, true) then
        return raw
    end
    return decode('"' .. raw .. '"')
end

local scan_value

local function scan_number(src, i)
    local c = at(src, i)
    if c == 45 then -- -
        i = i + 1
        c = at(src, i)
    end
    if not c or c < 48 or c > 57 then
        return invalid("unexpected character at byte " .. i + 1)
    end
    while c and c >= 48 and c <= 57 do
        i = i + 1
        c = at(src, i)
    end
    if c == 46 then -- .
        i = i + 1
        c = at(src, i)
        if not c or c < 48 or c > 57 then
            return invalid("bad number at byte " .. i + 1)
        end
        while c and c >= 48 and c <= 57 do
            i = i + 1
            c = at(src, i)
        end
    end
    if c == 101 or c == 69 then -- e E
        i = i + 1
        c = at(src, i)
        if c == 43 or c == 45 then
            i = i + 1
            c = at(src, i)
        end
        if not c or c < 48 or c > 57 then
            return invalid("bad number at byte " .. i + 1)
        end
        while c and c >= 48 and c <= 57 do
            i = i + 1
            c = at(src, i)
        end
    end
    return i
end

local function literal(src, i, word)
    local n, off = #word, i - src.base
    if off >= 0 and off + n <= src.n and C.memcmp(src.p + off, word, n) == 0 then
        return i + n -- in the window: no loop (see skip_ws)
    end
    for k = 1, n do
        if at(src, i + k - 1) ~= word:byte(k) then
            return invalid("unexpected character at byte " .. i + 1)
        end
    end
    return i + #word
end

-- Scans an array or object at i; `element(src, i, depth, state)` (arrays
-- only, optional) scans each element instead of scan_value. A module-level
-- function and a state table, not a closure: creating a closure per request
-- is not compiled by LuaJIT (FNEW), and the whole scan then runs interpreted.
local function scan_container(src, i, depth, close, element, state)
    if depth > MAX_DEPTH then
        return invalid("nested too deeply")
    end
    local is_object = close == B_RBRACE
    local c
    i, c = skip_ws(src, i + 1)
    if c == close then
        return i + 1
    end
    while true do
        local err
        if is_object then
            if c ~= B_QUOTE then
                return invalid("expected a key at byte " .. i + 1)
            end
            i = skip_string(src, i)
            if not i then
                return invalid("unterminated string")
            end
            i, c = skip_ws(src, i)
            if c ~= B_COLON then
                return invalid("expected ':' at byte " .. i + 1)
            end
            i = skip_ws(src, i + 1)
        end
        if element then
            i, err = element(src, i, depth, state)
        else
            i, err = scan_value(src, i, depth)
        end
        if not i then
            return nil, err
        end
        i, c = skip_ws(src, i)
        if c == close then
            return i + 1
        elseif c ~= B_COMMA then
            return invalid("expected ',' or a closing bracket at byte " .. i + 1)
        end
        i, c = skip_ws(src, i + 1)
    end
end

function scan_value(src, i, depth)
    local c = at(src, i)
    if c == B_QUOTE then
        local j = skip_string(src, i)
        if not j then
            return invalid("unterminated string")
        end
        return j
    elseif c == B_LBRACE then
        return scan_container(src, i, depth + 1, B_RBRACE)
    elseif c == B_LBRACKET then
        return scan_container(src, i, depth + 1, B_RBRACKET)
    elseif c == 116 then
        return literal(src, i, "true")
    elseif c == 102 then
        return literal(src, i, "false")
    elseif c == 110 then
        return literal(src, i, "null")
    elseif c == nil then
        return invalid("unexpected end of the body")
    end
    return scan_number(src, i)
end

-- The "role" of a message object at i, and the index after the object.
local function scan_message(src, i, depth)
    if at(src, i) ~= B_LBRACE then
        return scan_value(src, i, depth)
    end
    if depth + 1 > MAX_DEPTH then
        return invalid("nested too deeply")
    end
    local c
    i, c = skip_ws(src, i + 1)
    if c == B_RBRACE then
        return i + 1
    end
    local role
    while true do
        if c ~= B_QUOTE then
            return invalid("expected a key at byte " .. i + 1)
        end
        local key_start = i
        i = skip_string(src, i)
        if not i then
            return invalid("unterminated string")
        end
        local is_role = i - key_start == 6 and text(src, key_start + 1, i - 1) == "role"
        i, c = skip_ws(src, i)
        if c ~= B_COLON then
            return invalid("expected ':' at byte " .. i + 1)
        end
        i, c = skip_ws(src, i + 1)
        local value_start = i
        local err
        i, err = scan_value(src, i, depth + 1)
        if not i then
            return nil, err
        end
        if is_role and c == B_QUOTE and i - value_start <= 34 then
            role = text(src, value_start + 1, i - 1)
        end
        i, c = skip_ws(src, i)
        if c == B_RBRACE then
            return i + 1, role
        elseif c ~= B_COMMA then
            return invalid("expected ',' or '}' at byte " .. i + 1)
        end
        i, c = skip_ws(src, i + 1)
    end
end

-- An element of "messages": notes where the first user message ends (for prefix()).
local function message_element(src, i, depth, messages)
    local after, role = scan_message(src, i, depth)
    if after and role == "user" and not messages.first_user_end then
        messages.first_user_end = after
    end
    return after, role
end

-- Reads the body, at most max_bytes. Returns a source for scan() (close() it),
-- or nil, err.
function _M.open(max_bytes)
    local length = tonumber(ngx.var.http_content_length)
    if length and length > max_bytes then
        return nil, errors.new(413, "The request body (" .. length .. " bytes) is larger than the gateway's limit of "
            .. max_bytes .. " bytes.", "request_too_large")
    end
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    local src
    if data then
        src = memory_source(data)
    else
        -- Above client_body_buffer_size nginx keeps the body in a temp file.
        local path = ngx.req.get_body_file()
        if not path then
            return memory_source("")
        end
        local fd = C.open(path, O_RDONLY)
        if fd < 0 then
            return nil, errors.new(500, "The gateway could not read the request body (" .. ffi.errno() .. ").",
                "internal_error")
        end
        -- pread never moves the file offset: lseek to the end is only a size query.
        src = { fd = fd, p = window, base = 0, n = 0, size = tonumber(C.lseek(fd, 0, SEEK_END)) }
    end
    if src.size > max_bytes then
        _M.close(src)
        return nil, errors.new(413, "The request body is larger than the gateway's limit of " .. max_bytes .. " bytes.",
            "request_too_large")
    end
    return src
end

function _M.close(src)
    if src and src.fd then
        C.close(src.fd)
        src.fd = nil
    end
end

-- A source over a Lua string (tests, and callers that hold the body already).
_M.from_string = memory_source

-- The prompt's leading part for prefix affinity, at most `limit` bytes of the
-- raw JSON: "messages" up to and including the first user message (so every
-- turn of a conversation shares it), else "prompt", else "input". nil: none.
function _M.prefix(src, fields, limit)
    local span = fields.messages or fields.prompt or fields.input
    if not span then
        return nil
    end
    local stop = span.first_user_end or span.stop
    if stop - span.start > limit then
        stop = span.start + limit
    end
    return text(src, span.start, stop)
end

-- Scans a JSON object body. Returns a table with: model (string or nil),
-- stream (true/false/nil), max_tokens (number or nil), sessions (field -> value, for the fields named in
-- the set `session_fields` that hold a short string) and the spans of
-- messages/prompt/input for prefix(); or nil,
-- err when the body is not a JSON object or "model" is repeated, not a
-- string, empty or too long.
function _M.scan(src, session_fields)
    local i, c = skip_ws(src, 0)
    if c ~= B_LBRACE then
        local what = "The request body must be a JSON object."
        if c == nil then
            what = "The request body is empty; send a JSON object with the request's fields."
        elseif c == 0xEF and at(src, 1) == 0xBB and at(src, 2) == 0xBF then
            what = "The request body starts with a UTF-8 byte order mark, which JSON does not allow (RFC 8259)."
        end
        return nil, errors.new(400, what, "invalid_json")
    end
    local out = {}
    local seen
    i, c = skip_ws(src, i + 1)
    if c == B_RBRACE then
        i = i + 1
    else
        while true do
            if c ~= B_QUOTE then
                return invalid("expected a key at byte " .. i + 1)
            end
            local key_end = scan_string_strict(src, i)
            if not key_end then
                return invalid("bad string at byte " .. i + 1)
            end
            -- Only short keys can be ones the gateway reads.
            local key = key_end - i <= 64 and string_value(src, i, key_end) or nil
            i, c = skip_ws(src, key_end)
            if c ~= B_COLON then
                return invalid("expected ':' at byte " .. i + 1)
            end
            i, c = skip_ws(src, i + 1)
            local start = i
            local err
            if key == "model" then
                if seen then
                    return nil, errors.new(400, "The request body has more than one \"model\" key.",
                        "duplicate_model", "model")
                end
                seen = true
                if c ~= B_QUOTE then
                    return nil, errors.new(400, "\"model\" must be a string.", "invalid_model", "model")
                end
                i = scan_string_strict(src, i)
                if not i then
                    return invalid("bad string at byte " .. start + 1)
                end
                -- Refuse before decoding: no work for a megabyte of "model".
                if i - start - 2 > _M.MAX_MODEL_LENGTH * 6 then
                    return nil, errors.new(400, "\"model\" is longer than " .. _M.MAX_MODEL_LENGTH .. " characters.",
                        "invalid_model", "model")
                end
                local model = string_value(src, start, i)
                if type(model) ~= "string" or model == "" or #model > _M.MAX_MODEL_LENGTH then
                    return nil, errors.new(400, "\"model\" must be a non-empty string of at most "
                        .. _M.MAX_MODEL_LENGTH .. " characters.", "invalid_model", "model")
                end
                out.model = model
            elseif key == "messages" and c == B_LBRACKET then
                local messages = { start = start }
                i, err = scan_container(src, i, 1, B_RBRACKET, message_element, messages)
                if not i then
                    return nil, err
                end
                messages.stop = i
                out.messages = messages
            else
                i, err = scan_value(src, i, 1)
                if not i then
                    return nil, err
                end
                if key == "prompt" or key == "input" then
                    out[key] = { start = start, stop = i }
                elseif key == "stream" and (c == 116 or c == 102) then
                    out.stream = c == 116
                elseif MAX_TOKENS[key] and i - start <= 10 then
                    out.max_tokens = tonumber(text(src, start, i))
                elseif session_fields and session_fields[key] and c == B_QUOTE
                    and i - start - 2 <= _M.MAX_SESSION_LENGTH then
                    local value = string_value(src, start, i)
                    if type(value) == "string" and value ~= "" then
                        out.sessions = out.sessions or {}
                        out.sessions[key] = value
                    end
                end
            end
            i, c = skip_ws(src, i)
            if c == B_RBRACE then
                i = i + 1
                break
            elseif c ~= B_COMMA then
                return invalid("expected ',' or '}' at byte " .. i + 1)
            end
            i, c = skip_ws(src, i + 1)
        end
    end
    local _, trailing = skip_ws(src, i)
    if trailing ~= nil then
        return invalid("unexpected data after the object")
    end
    if src.failed then
        return nil, errors.new(500, "The gateway could not read the request body.", "internal_error")
    end
    return out
end

-- The top-level "model" of a JSON body string (tests and small callers).
function _M.model(s)
    local fields, err = _M.scan(memory_source(s))
    if not fields then
        return nil, err
    end
    return fields.model
end

return _M

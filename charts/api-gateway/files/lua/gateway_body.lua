-- The request body: read it with a size cap, and find the top-level "model"
-- without decoding the rest. The scanner checks the JSON structure of the whole
-- body (objects, arrays, strings, numbers, literals) but builds no Lua values
-- except the model string, so a 1 MB prompt costs a few string.find calls.
-- Nested strings are skipped, not validated: the model server validates them.
local cjson = require "cjson.safe"
local errors = require "gateway_errors"

local ngx = ngx
local io_open = io.open
local byte = string.byte
local char = string.char
local find = string.find
local sub = string.sub
local tonumber = tonumber
local type = type
local decode = cjson.decode

local _M = {}

-- Longest model name accepted (the catalog allows 256-character aliases).
_M.MAX_MODEL_LENGTH = 256
local MAX_DEPTH = 128

local B_QUOTE, B_BACKSLASH = 34, 92
local B_LBRACE, B_RBRACE, B_LBRACKET, B_RBRACKET = 123, 125, 91, 93
local B_COLON, B_COMMA = 58, 44

local function invalid(what)
    return nil, errors.new(400, "The request body is not valid JSON: " .. what .. ".", "invalid_json")
end

-- Reads the whole body, at most max_bytes. Returns the body string, or nil, err.
function _M.read(max_bytes)
    local length = tonumber(ngx.var.http_content_length)
    if length and length > max_bytes then
        return nil, errors.new(413, "The request body (" .. length .. " bytes) is larger than the gateway's limit of "
            .. max_bytes .. " bytes.", "request_too_large")
    end
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if not data then
        -- Above client_body_buffer_size nginx keeps the body in a temp file.
        local path = ngx.req.get_body_file()
        if not path then
            return ""
        end
        local file, err = io_open(path, "rb")
        if not file then
            return nil, errors.new(500, "The gateway could not read the request body: " .. (err or "?"),
                "internal_error")
        end
        data = file:read("*a")
        file:close()
    end
    if #data > max_bytes then
        return nil, errors.new(413, "The request body is larger than the gateway's limit of " .. max_bytes .. " bytes.",
            "request_too_large")
    end
    return data
end

-- A byte loop: LuaJIT compiles it, not string.find with a pattern.
local function skip_ws(s, i)
    local c = byte(s, i)
    while c == 32 or c == 10 or c == 13 or c == 9 do
        i = i + 1
        c = byte(s, i)
    end
    return i
end

-- Index after the string that starts at i (a quote), found by the next quote
-- that no backslash escapes. Escapes are not checked here.
local function skip_string(s, i)
    local j = i + 1
    while true do
        local q = find(s, '"', j, true)
        if not q then
            return nil
        end
        local k = q - 1
        while byte(s, k) == B_BACKSLASH do
            k = k - 1
        end
        if (q - 1 - k) % 2 == 0 then
            return q + 1
        end
        j = q + 1
    end
end

-- Index after the string at i, checking escapes and control characters
-- (used for keys and for the model value, which the gateway interprets).
local function scan_string_strict(s, i)
    local j = i + 1
    while true do
        local k = find(s, '[%z\1-\31"\\]', j)
        if not k then
            return nil
        end
        local c = byte(s, k)
        if c == B_QUOTE then
            return k + 1
        elseif c ~= B_BACKSLASH then
            return nil
        end
        local e = byte(s, k + 1)
        if e == 117 then -- \uXXXX
            if not find(s, "^%x%x%x%x", k + 2) then
                return nil
            end
            j = k + 6
        elseif e and find('"\\/bfnrt', char(e), 1, true) then
            j = k + 2
        else
            return nil
        end
    end
end

local scan_value

local function scan_container(s, i, depth, close)
    if depth > MAX_DEPTH then
        return invalid("nested too deeply")
    end
    local is_object = close == B_RBRACE
    i = skip_ws(s, i + 1)
    if byte(s, i) == close then
        return i + 1
    end
    while true do
        local err
        if is_object then
            if byte(s, i) ~= B_QUOTE then
                return invalid("expected a key at byte " .. i)
            end
            i = skip_string(s, i)
            if not i then
                return invalid("unterminated string")
            end
            i = skip_ws(s, i)
            if byte(s, i) ~= B_COLON then
                return invalid("expected ':' at byte " .. i)
            end
            i = skip_ws(s, i + 1)
        end
        i, err = scan_value(s, i, depth)
        if not i then
            return nil, err
        end
        i = skip_ws(s, i)
        local c = byte(s, i)
        if c == close then
            return i + 1
        elseif c ~= B_COMMA then
            return invalid("expected ',' or a closing bracket at byte " .. i)
        end
        i = skip_ws(s, i + 1)
    end
end

function scan_value(s, i, depth)
    local c = byte(s, i)
    if c == B_QUOTE then
        local j = skip_string(s, i)
        if not j then
            return invalid("unterminated string")
        end
        return j
    elseif c == B_LBRACE then
        return scan_container(s, i, depth + 1, B_RBRACE)
    elseif c == B_LBRACKET then
        return scan_container(s, i, depth + 1, B_RBRACKET)
    elseif c == 116 and sub(s, i, i + 3) == "true" then
        return i + 4
    elseif c == 102 and sub(s, i, i + 4) == "false" then
        return i + 5
    elseif c == 110 and sub(s, i, i + 3) == "null" then
        return i + 4
    end
    local _, e = find(s, "^-?%d+", i)
    if not e then
        return invalid("unexpected character at byte " .. i)
    end
    local _, f = find(s, "^%.%d+", e + 1)
    e = f or e
    _, f = find(s, "^[eE][-+]?%d+", e + 1)
    return (f or e) + 1
end

-- The text of a JSON string token s[i..j-1] (quotes included).
local function string_value(s, i, j)
    local raw = sub(s, i + 1, j - 2)
    if not find(raw, "\\", 1, true) then
        return raw
    end
    return decode(sub(s, i, j - 1))
end

-- The top-level "model" of a JSON object body.
-- Returns the model string, or nil when absent; nil, err when the body is not a
-- JSON object, "model" is repeated, not a string, empty or too long.
function _M.model(s)
    local i = skip_ws(s, 1)
    if byte(s, i) ~= B_LBRACE then
        return nil, errors.new(400, "The request body must be a JSON object.", "invalid_json")
    end
    i = skip_ws(s, i + 1)
    local model, seen
    if byte(s, i) == B_RBRACE then
        i = i + 1
    else
        while true do
            if byte(s, i) ~= B_QUOTE then
                return invalid("expected a key at byte " .. i)
            end
            local key_end = scan_string_strict(s, i)
            if not key_end then
                return invalid("bad string at byte " .. i)
            end
            local key = string_value(s, i, key_end)
            i = skip_ws(s, key_end)
            if byte(s, i) ~= B_COLON then
                return invalid("expected ':' at byte " .. i)
            end
            i = skip_ws(s, i + 1)
            if key == "model" then
                if seen then
                    return nil, errors.new(400, "The request body has more than one \"model\" key.",
                        "duplicate_model", "model")
                end
                seen = true
                if byte(s, i) ~= B_QUOTE then
                    return nil, errors.new(400, "\"model\" must be a string.", "invalid_model", "model")
                end
                local j = scan_string_strict(s, i)
                if not j then
                    return invalid("bad string at byte " .. i)
                end
                -- Refuse before decoding: no work for a megabyte of "model".
                if j - i - 2 > _M.MAX_MODEL_LENGTH * 6 then
                    return nil, errors.new(400, "\"model\" is longer than " .. _M.MAX_MODEL_LENGTH .. " characters.",
                        "invalid_model", "model")
                end
                model = string_value(s, i, j)
                if type(model) ~= "string" or model == "" or #model > _M.MAX_MODEL_LENGTH then
                    return nil, errors.new(400, "\"model\" must be a non-empty string of at most "
                        .. _M.MAX_MODEL_LENGTH .. " characters.", "invalid_model", "model")
                end
                i = j
            else
                local err
                i, err = scan_value(s, i, 1)
                if not i then
                    return nil, err
                end
            end
            i = skip_ws(s, i)
            local c = byte(s, i)
            if c == B_RBRACE then
                i = i + 1
                break
            elseif c ~= B_COMMA then
                return invalid("expected ',' or '}' at byte " .. i)
            end
            i = skip_ws(s, i + 1)
        end
    end
    if skip_ws(s, i) <= #s then
        return invalid("unexpected data after the object")
    end
    return model
end

return _M

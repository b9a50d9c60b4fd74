-- A fake `ngx` for unit tests of the gateway's Lua modules (no nginx needed).
-- reset() installs a fresh one into _G and drops the gateway modules from
-- package.loaded, so every test starts from a clean, inspectable state.
local M = {}

local function shared_dict()
    local data = {}
    local dict = {}
    function dict:get(key) return data[key] end
    function dict:set(key, value) data[key] = value; return true end
    function dict:delete(key) data[key] = nil end
    function dict:incr(key, value, init)
        if data[key] == nil then
            if init == nil then return nil, "not found" end
            data[key] = init
        end
        data[key] = data[key] + value
        return data[key]
    end
    function dict:get_keys()
        local keys = {}
        for k in pairs(data) do keys[#keys + 1] = k end
        return keys
    end
    dict.data = data
    return dict
end

-- A stand-in digest: any injective function of the key works for the tests.
local function digest(s)
    return "digest:" .. s
end

-- CRC-32 (IEEE), as ngx.crc32_long computes it: the balancer's hash ring must
-- behave here as it does in nginx.
local bit = require "bit"
local CRC = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        c = bit.band(c, 1) == 1 and bit.bxor(0xEDB88320, bit.rshift(c, 1)) or bit.rshift(c, 1)
    end
    CRC[i] = c
end
local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do
        c = bit.bxor(CRC[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
    end
    c = bit.bxor(c, 0xFFFFFFFF)
    return c < 0 and c + 4294967296 or c
end
M.crc32 = crc32

function M.reset(opts)
    opts = opts or {}
    for name in pairs(package.loaded) do
        if name:match("^gateway_") then
            package.loaded[name] = nil
        end
    end
    local sent = { headers = {}, body = {}, exited = nil, logs = {} }
    local fake
    fake = {
        HTTP_OK = 200,
        OK = 0,
        ERR = 4, WARN = 5, NOTICE = 6,
        status = 0,
        header = sent.headers,
        var = opts.var or {},
        shared = {
            gateway_metrics = shared_dict(),
            gateway_endpoints = shared_dict(),
            gateway_inflight = shared_dict(),
            gateway_warm = shared_dict(),
            gateway_ratelimit = shared_dict(),
        },
        ctx = {},
        crc32_long = crc32,
        sent = sent,
        now = function() return fake.clock or opts.now or 1000.5 end,
        time = function() return 1000 end,
        sha1_bin = digest,
        unescape_uri = function(s)
            return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
        end,
        log = function(...) sent.logs[#sent.logs + 1] = table.concat({ ... }) end,
        print = function(...)
            for _, part in ipairs({ ... }) do sent.body[#sent.body + 1] = tostring(part) end
        end,
        exit = function(code) sent.exited = code; return code end,
        req = {
            get_method = function() return opts.method or "POST" end,
            read_body = function() sent.body_read = true end,
            get_body_data = function() return opts.body end,
            get_body_file = function() return opts.body_file end,
            start_time = function() return 1000 end,
        },
        worker = { id = function() return 0 end },
    }
    _G.ngx = fake
    return fake
end

-- The JSON body the stub "sent", decoded.
function M.sent_json(fake)
    local cjson = require "cjson.safe"
    return cjson.decode(table.concat(fake.sent.body))
end

function M.write_file(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

return M

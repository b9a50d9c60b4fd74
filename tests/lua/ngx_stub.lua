-- A fake `ngx` for unit tests of the gateway's Lua modules (no nginx needed).
-- reset() installs a fresh one into _G and drops the gateway modules from
-- package.loaded, so every test starts from a clean, inspectable state.
local M = {}

local function shared_dict()
    local data = {}
    local dict = {}
    function dict:get(key) return data[key] end
    function dict:set(key, value) data[key] = value; return true end
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
            gateway_health = shared_dict(),
            gateway_ratelimit = shared_dict(),
        },
        sent = sent,
        now = function() return opts.now or 1000.5 end,
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

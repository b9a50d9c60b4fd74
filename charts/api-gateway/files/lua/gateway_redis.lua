-- A small Redis client (RESP2 over a cosocket) for the shared budgets: AUTH,
-- SELECT, and scripts run with EVALSHA (loaded on first use). Debian's nginx
-- Lua packages ship no lua-resty-redis. Connections go back to nginx's
-- cosocket pool after each use. Works in access, timer and content phases
-- (not in log phases: callers defer to a timer there).
local ngx = ngx
local concat = table.concat
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local _M = {}

local function command(args)
    local out = { "*", #args, "\r\n" }
    for _, a in ipairs(args) do
        a = tostring(a)
        out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    return concat(out)
end
_M.command = command

-- One reply: a string, a number, an array, nil (null), or false, message (an error reply).
local function read_reply(sock)
    local line, err = sock:receive("*l")
    if not line then
        return nil, err
    end
    local kind, rest = sub(line, 1, 1), sub(line, 2)
    if kind == "+" then
        return rest
    elseif kind == "-" then
        return false, rest
    elseif kind == ":" then
        return tonumber(rest)
    elseif kind == "$" then
        local n = tonumber(rest)
        if not n or n < 0 then
            return ngx.null
        end
        local data
        data, err = sock:receive(n + 2)
        if not data then
            return nil, err
        end
        return sub(data, 1, n)
    elseif kind == "*" then
        local n = tonumber(rest)
        if not n or n < 0 then
            return ngx.null
        end
        local list = {}
        for i = 1, n do
            local v, verr = read_reply(sock)
            if v == nil then
                return nil, verr
            end
            list[i] = v
        end
        return list
    end
    return nil, "bad reply " .. line
end
_M.read_reply = read_reply

-- settings: { host, port, password, database, timeoutMs }
local function connect(settings)
    local sock = ngx.socket.tcp()
    sock:settimeout(settings.timeoutMs or 200)
    local ok, err = sock:connect(settings.host, settings.port, { pool = settings.pool })
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    if sock:getreusedtimes() == 0 then
        local setup = {}
        if settings.password and settings.password ~= "" then
            setup[#setup + 1] = { "AUTH", settings.password }
        end
        if (settings.database or 0) ~= 0 then
            setup[#setup + 1] = { "SELECT", settings.database }
        end
        for _, args in ipairs(setup) do
            ok, err = sock:send(command(args))
            local reply
            if ok then
                reply, err = read_reply(sock)
            end
            if not reply then
                sock:close()
                return nil, args[1] .. ": " .. tostring(err)
            end
        end
    end
    return sock
end

local shas = {}

-- Runs a script (its SHA-1 is loaded once per worker); returns its reply, or nil, err.
function _M.eval(settings, script, keys, argv)
    local sock, err = connect(settings)
    if not sock then
        return nil, err
    end
    local sha = shas[script]
    local reply
    for _ = 1, 2 do
        local args
        if sha then
            args = { "EVALSHA", sha, #keys }
        else
            args = { "EVAL", script, #keys }
        end
        for _, k in ipairs(keys) do
            args[#args + 1] = k
        end
        for _, a in ipairs(argv) do
            args[#args + 1] = a
        end
        local ok, serr = sock:send(command(args))
        if not ok then
            sock:close()
            return nil, serr
        end
        reply, err = read_reply(sock)
        if reply == false and sha and sub(err, 1, 8) == "NOSCRIPT" then
            sha = nil -- the server restarted or flushed its scripts: send the source
        else
            break
        end
    end
    if reply == nil then
        sock:close()
        return nil, err
    end
    sock:setkeepalive(60000, 16)
    if reply == false then
        return nil, err
    end
    if not sha then
        shas[script] = ngx.sha1_bin and _M.hex(ngx.sha1_bin(script)) or nil
    end
    return reply
end

function _M.hex(bin)
    if type(bin) ~= "string" then
        return nil
    end
    return (bin:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

return _M

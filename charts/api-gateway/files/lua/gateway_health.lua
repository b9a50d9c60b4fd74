-- Background health checks: worker 0 polls every model's health path through
-- nginx itself (the metrics server's loopback-only /_gateway/health/<upstream>
-- location proxies to the model's upstream block, so no DNS resolver is
-- needed) and stores ready/not ready in a shared dict that all workers read.
-- Requests never wait on a health check; /v1/models answers from the cache.
local config = require "gateway_config"

local ngx = ngx
local match = string.match
local tonumber = tonumber
local ipairs = ipairs

local _M = { DICT = "gateway_health" }

-- Status code of an HTTP/1.0 GET to the local health location, or nil, err.
function _M.probe(port, upstream, timeout_ms)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout_ms)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        return nil, err
    end
    ok, err = sock:send("GET /_gateway/health/" .. upstream .. " HTTP/1.0\r\nHost: localhost\r\n\r\n")
    if not ok then
        sock:close()
        return nil, err
    end
    local line
    line, err = sock:receive("*l")
    sock:close()
    if not line then
        return nil, err
    end
    return tonumber(match(line, "^HTTP/%d%.%d (%d%d%d)"))
end

-- "ready" (health path answered 200), "loading" (it answered something else:
-- the server is up but not ready) or "unreachable" (no answer: refused, reset,
-- timed out; the local proxy reports 502/504).
function _M.classify(status)
    if status == 200 then
        return "ready"
    elseif status == nil or status == 502 or status == 504 then
        return "unreachable"
    end
    return "loading"
end

local function check(premature, route, settings)
    if premature then
        return
    end
    -- The local location's own timeouts bound the model's answer; give it 1 s more.
    local status, err = _M.probe(settings.port, route.upstream, (settings.timeoutSeconds + 1) * 1000)
    local state = _M.classify(status)
    local dict = ngx.shared[_M.DICT]
    local was = dict:get(route.name)
    dict:set(route.name, state, settings.intervalSeconds * 3)
    if was ~= state then
        ngx.log(ngx.WARN, "model ", route.name, " is ", state, " (health check: ", status or err, ")")
    end
end

-- init_worker: worker 0 starts one timer per model.
function _M.start()
    local settings = config.health
    if not config.loaded or not settings.enabled or ngx.worker.id() ~= 0 then
        return
    end
    for _, route in ipairs(config.routes) do
        ngx.timer.at(0, check, route, settings)
        local ok, err = ngx.timer.every(settings.intervalSeconds, check, route, settings)
        if not ok then
            ngx.log(ngx.ERR, "cannot start the health check of ", route.name, ": ", err)
        end
    end
end

-- "ready", "loading", "unreachable", or nil (not checked yet, or checks off).
function _M.state(name)
    return ngx.shared[_M.DICT]:get(name)
end

-- true, false, or nil when unknown.
function _M.ready(name)
    local state = ngx.shared[_M.DICT]:get(name)
    if state == nil then
        return nil
    end
    return state == "ready"
end

return _M

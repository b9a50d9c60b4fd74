-- Health of each endpoint (pod) of each model. Worker 0 polls every known
-- endpoint's own health path (the entry's healthPath) on a timer, all probes
-- of a round in parallel (a round still running makes the next one skip), and
-- stores ready / loading / unreachable per endpoint in a shared dict. A failed
-- connect from a request marks its endpoint failed for failTimeoutSeconds
-- (passive check). Workers keep a copy that they refresh when the model's
-- health version moves; requests never wait on a probe.
local config = require "gateway_config"
local endpoints = require "gateway_endpoints"

local ngx = ngx
local match = string.match
local tonumber = tonumber
local ipairs = ipairs

local _M = { DICT = "gateway_endpoints" }

-- Per worker: route name -> { version, state = {id -> state}, failed = {id -> until} }
local copies = {}

-- Status code of GET path on one endpoint, or nil, err. The probe names its model in
-- X-Gateway-Model like a routed request, so a gateway in front (an InferencePool
-- HTTPRoute matching that header) routes it too.
function _M.probe(ep, host, path, timeout_ms, model)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout_ms)
    local ok, err = sock:connect(ep.address, ep.port)
    if not ok then
        return nil, err
    end
    ok, err = sock:send("GET " .. path .. " HTTP/1.0\r\nHost: " .. host .. "\r\nUser-Agent: api-gateway-health\r\n"
        .. (model and "X-Gateway-Model: " .. model .. "\r\n" or "") .. "\r\n")
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

-- "ready" (200), "loading" (any other answer: up but not serving yet) or
-- "unreachable" (no answer: refused, reset, timed out; or a proxy in front of
-- an external server saying so with 502/504).
function _M.classify(status)
    if status == 200 then
        return "ready"
    elseif status == nil or status == 502 or status == 504 then
        return "unreachable"
    end
    return "loading"
end

local bump = endpoints.bump

local function check(route, ep, settings)
    local status, err = _M.probe(ep, route.host, route.health_path, settings.timeoutSeconds * 1000, route.name)
    local state = _M.classify(status)
    local dict = ngx.shared[_M.DICT]
    local key = "h\0" .. route.name .. "\0" .. ep.id
    local was = dict:get(key)
    dict:set(key, state, settings.intervalSeconds * 3)
    local failed_key = "f\0" .. route.name .. "\0" .. ep.id
    if state == "ready" and dict:get(failed_key) then
        -- It answers again: no need to wait out failTimeoutSeconds.
        dict:delete(failed_key)
        bump(route.name)
    end
    if was ~= state then
        bump(route.name)
        ngx.log(ngx.WARN, "model ", route.name, " endpoint ", ep.id, " is ", state, " (health check ",
            route.health_path, ": ", status or err, ")")
    end
end

local function check_all(routes, settings)
    local threads = {}
    for _, route in ipairs(routes) do
        for _, ep in ipairs(endpoints.view(route).list) do
            threads[#threads + 1] = ngx.thread.spawn(check, route, ep, settings)
        end
    end
    for _, t in ipairs(threads) do
        ngx.thread.wait(t)
    end
end

local running = false
local function round(premature, settings)
    if premature or running then
        return
    end
    running = true
    check_all(config.routes, settings)
    running = false
end

-- Discovery found new endpoints for these routes: check them at once.
function _M.check_routes(routes)
    local settings = config.health
    if settings.enabled then
        check_all(routes, settings)
    end
end

-- init_worker: worker 0 checks every endpoint every intervalSeconds.
function _M.start()
    local settings = config.health
    if not config.loaded or not settings.enabled or ngx.worker.id() ~= 0 then
        return
    end
    -- Discovery checks what it finds at once (check_routes); this is the interval.
    local ok, err = ngx.timer.every(settings.intervalSeconds, round, settings)
    if not ok then
        ngx.log(ngx.ERR, "cannot start the health checks: ", err)
    end
end

-- A request could not connect to the endpoint: skip it for failTimeoutSeconds.
function _M.failed(route, id)
    local seconds = config.health.failTimeoutSeconds or 10
    if seconds <= 0 then
        return
    end
    ngx.shared[_M.DICT]:set("f\0" .. route.name .. "\0" .. id, ngx.now() + seconds, seconds)
    bump(route.name)
end

-- This worker's copy of a route's endpoint states, refreshed on a version change.
local function copy(route, list, version)
    local dict = ngx.shared[_M.DICT]
    local c = copies[route.name]
    if c and c.version == version and c.list == list then
        return c
    end
    c = { version = version, list = list, state = {}, failed = {} }
    for _, ep in ipairs(list) do
        c.state[ep.id] = dict:get("h\0" .. route.name .. "\0" .. ep.id)
        c.failed[ep.id] = dict:get("f\0" .. route.name .. "\0" .. ep.id)
    end
    copies[route.name] = c
    return c
end

-- Whether requests may go to the endpoint: not failing its health check (an
-- endpoint not checked yet counts as usable) and not failed recently.
function _M.usable(c, ep, now)
    local state = c.state[ep.id]
    if state == "loading" or state == "unreachable" then
        return false
    end
    local until_ = c.failed[ep.id]
    return not until_ or until_ <= now
end

-- The route's endpoints with their states: { list, copy } for the balancer (as
-- of at most endpoints.VERSION_SECONDS ago; fresh: as of now).
function _M.endpoints(route, fresh)
    local version = endpoints.version(route, fresh)
    local list = endpoints.view(route, version).list
    return list, copy(route, list, version)
end

-- A model's state: "ready" (an endpoint passed its health check, or checks are
-- off), "unknown" (discovery has not run, or no endpoint is checked yet: they
-- get requests meanwhile), "loading" (some endpoint answers but is not ready),
-- "unreachable" (endpoints, none answering or all failed recently),
-- "no_endpoints" (discovery found none: scaled to zero, not deployed yet); and
-- the usable and total counts.
function _M.summary(route)
    if not endpoints.resolved() then
        return "unknown", 0, 0
    end
    -- Fresh: /v1/models and a 503 tell the state as of now.
    local list, c = _M.endpoints(route, true)
    if #list == 0 then
        return "no_endpoints", 0, 0
    end
    local checks = config.health.enabled
    local now, usable, checked, loading = ngx.now(), 0, false, false
    for _, ep in ipairs(list) do
        local state = c.state[ep.id]
        if _M.usable(c, ep, now) then
            usable = usable + 1
            checked = checked or state == "ready" or not checks
        elseif state == "loading" then
            loading = true
        end
    end
    if usable > 0 then
        return checked and "ready" or "unknown", usable, #list
    end
    return loading and "loading" or "unreachable", 0, #list
end

return _M

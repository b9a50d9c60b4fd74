-- Endpoint discovery: which pods (address:port) serve each model, learned while
-- nginx runs. Worker 0 resolves every route on a timer, outside the request
-- path: the model's headless Service through cluster DNS SRV records (only
-- ready pods are listed, each with its own port), or the fixed servers of
-- routing.endpoints (host names re-resolved the same way). Results go to a
-- shared dict with a version per model; every worker rebuilds its own copy
-- when the version moves, so a request reads a Lua table, never the DNS.
-- A name that does not resolve is simply a model with no endpoints (503), so
-- nginx starts with any catalog, whatever exists in the cluster yet.
local config = require "gateway_config"
local dns = require "gateway_dns"

local ngx = ngx
local concat = table.concat
local gmatch = string.gmatch
local match = string.match
local sort = table.sort
local tonumber = tonumber
local ipairs = ipairs

-- VERSION_SECONDS: how long a worker uses a route's version before it reads it
-- again (a shared-dict read is ~0.9 us of a request's CPU, interpreted).
local _M = { DICT = "gateway_endpoints", VERSION_SECONDS = 0.1 }

-- Per worker: route name -> { version = n, list = { {id, address, port}, ... } }
local views = {}
-- Per worker: route name -> { version = n, at = when it was read }
local versions = {}

local function encode(list)
    local ids = {}
    for i, ep in ipairs(list) do
        ids[i] = ep.address .. ":" .. ep.port
    end
    sort(ids)
    return concat(ids, " ")
end

local function decode(text)
    local list = {}
    for id in gmatch(text or "", "%S+") do
        local address, port = match(id, "^(.+):(%d+)$")
        list[#list + 1] = { id = id, address = address, port = tonumber(port) }
    end
    return list
end

local function is_ip(host)
    return match(host, "^%d+%.%d+%.%d+%.%d+$") ~= nil
end

-- The endpoints of one route right now, or nil, err (the DNS did not answer).
function _M.lookup(route, servers, timeout_ms)
    local source = route.discovery
    if source.srv then
        return dns.srv_endpoints(servers, source.srv, timeout_ms)
    end
    local out = {}
    for _, server in ipairs(source.servers) do
        if is_ip(server.host) then
            out[#out + 1] = { address = server.host, port = server.port }
        else
            local found, err = dns.a_endpoints(servers, server.host, server.port, timeout_ms)
            if not found then
                return nil, err
            end
            for _, ep in ipairs(found) do
                out[#out + 1] = ep
            end
        end
    end
    return out
end

-- A route's version: one counter bumped when its endpoints change (publish) or
-- their states do (gateway_health), so a request checks both with one read.
function _M.bump(name)
    ngx.shared[_M.DICT]:incr("ver\0" .. name, 1, 0)
    versions[name] = nil -- this worker sees its own change at once
end

-- A route's version as this worker read it at most VERSION_SECONDS ago (fresh:
-- read now): a change (new pods, a failed or recovered one) reaches every
-- worker's requests within that time.
function _M.version(route, fresh)
    local now = ngx.now()
    local v = versions[route.name]
    if v and not fresh and now - v.at < _M.VERSION_SECONDS then
        return v.version
    end
    local version = ngx.shared[_M.DICT]:get(route.version_key) or 0
    versions[route.name] = { version = version, at = now }
    return version
end

-- Stores one route's endpoints; bumps its version when they changed.
function _M.publish(name, list)
    local dict = ngx.shared[_M.DICT]
    local text = encode(list)
    local key = "eps\0" .. name
    if dict:get(key) == text then
        return false
    end
    dict:set(key, text)
    _M.bump(name)
    return true
end

local function refresh_route(route, servers, settings, changed)
    local dict = ngx.shared[_M.DICT]
    local list, err = _M.lookup(route, servers, settings.timeoutMs)
    local err_key = "err\0" .. route.name
    if list then
        if _M.publish(route.name, list) then
            ngx.log(ngx.NOTICE, "model ", route.name, ": ", #list, " endpoint(s): ", dict:get("eps\0" .. route.name))
            changed[#changed + 1] = route
        end
        if dict:get(err_key) then
            dict:delete(err_key)
            ngx.log(ngx.WARN, "model ", route.name, ": endpoint lookup works again")
        end
    else
        -- Keep the last known endpoints: a DNS hiccup must not take pods away.
        dict:incr("dns_errors\0" .. route.name, 1, 0)
        if not dict:get(err_key) then
            ngx.log(ngx.WARN, "model ", route.name, ": endpoint lookup failed (keeping the last known ",
                "endpoints): ", err)
        end
        dict:set(err_key, err)
    end
end

-- One round: every route looked up at once, so one slow answer delays no other
-- model; a round still running when the next is due makes that one skip.
local running = false
local function refresh(premature, servers, settings)
    if premature or running then
        return
    end
    running = true
    local threads, changed = {}, {}
    for _, route in ipairs(config.routes) do
        threads[#threads + 1] = ngx.thread.spawn(refresh_route, route, servers, settings, changed)
    end
    for _, t in ipairs(threads) do
        ngx.thread.wait(t)
    end
    running = false
    ngx.shared[_M.DICT]:set("resolved", true)
    if #changed > 0 then
        -- New pods are health-checked now, not at the next interval. (Required here:
        -- gateway_health requires this module.)
        require("gateway_health").check_routes(changed)
    end
end

-- init_worker: worker 0 resolves every route now and then every intervalSeconds.
function _M.start()
    if not config.loaded or ngx.worker.id() ~= 0 then
        return
    end
    local settings = config.discovery
    local servers = dns.servers(settings.servers, settings.resolvConf)
    if #servers == 0 and config.needs_dns then
        ngx.log(ngx.ERR, "no DNS server: set routing.discovery.servers, or give the pod a resolv.conf")
    end
    ngx.timer.at(0, refresh, servers, settings)
    local ok, err = ngx.timer.every(settings.intervalSeconds, refresh, servers, settings)
    if not ok then
        ngx.log(ngx.ERR, "cannot start endpoint discovery: ", err)
    end
end

-- Whether the first discovery round has run (readiness of the gateway pod).
function _M.resolved()
    return ngx.shared[_M.DICT]:get("resolved") == true
end

-- This worker's view of a route's endpoints: { version, text, list }, for the
-- route's version (read here unless given). Rebuilt only when discovery
-- published other endpoints: a state change keeps the same list.
function _M.view(route, version)
    local dict = ngx.shared[_M.DICT]
    version = version or _M.version(route)
    local view = views[route.name]
    if view and view.version == version then
        return view
    end
    local text = dict:get(route.endpoints_key)
    if view and view.text == text then
        view.version = version
        return view
    end
    view = { version = version, text = text, list = decode(text) }
    views[route.name] = view
    return view
end

-- The last lookup error of a route (nil when the last lookup worked).
function _M.lookup_error(name)
    return ngx.shared[_M.DICT]:get("err\0" .. name)
end

function _M.dns_errors(name)
    return ngx.shared[_M.DICT]:get("dns_errors\0" .. name) or 0
end

return _M

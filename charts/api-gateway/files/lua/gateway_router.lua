-- access phase of the routed endpoints: API key, rate limit, method and
-- content type, body, model -> upstream (or 503 when its health check failed).
-- Sets the nginx variables that proxy_pass and the access log read; the body
-- itself goes upstream untouched. Also the upstream error page (upstream_error).
local config = require "gateway_config"
local errors = require "gateway_errors"
local body = require "gateway_body"
local auth = require "gateway_auth"
local ratelimit = require "gateway_ratelimit"
local health = require "gateway_health"

local ngx = ngx
local find = string.find
local gmatch = string.gmatch
local lower = string.lower
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local unescape = ngx.unescape_uri

local _M = { RATELIMIT_DICT = "gateway_ratelimit" }

-- The caller's key entry (nil when auth is off), or nil, err.
function _M.caller()
    if not config.auth_enabled then
        return false
    end
    local key, err = auth.authenticate(config.keys, ngx.sha1_bin)
    if not key then
        return nil, err
    end
    ngx.var.gateway_key = key.name
    if key.requests_per_minute then
        local ok, retry_after = ratelimit.check(ngx.shared[_M.RATELIMIT_DICT], key.name, key.requests_per_minute,
            ngx.now())
        if not ok then
            return nil, errors.new(429, "Rate limit of " .. key.requests_per_minute
                .. " requests per minute reached for this API key; retry after " .. retry_after .. " s.",
                "rate_limit_exceeded", nil, { ["Retry-After"] = tostring(retry_after) })
        end
    end
    return key
end

-- Query parameters that look like credentials: nginx writes the request line,
-- query included, into its error log, and would forward it upstream.
local CREDENTIAL_PARAMS = { api_key = true, ["api-key"] = true, apikey = true, key = true, token = true,
                            access_token = true, auth = true, authorization = true }

function _M.credential_in_query(args)
    if not args or args == "" then
        return false
    end
    for name in gmatch(args, "([^&=]+)=?[^&]*") do
        if CREDENTIAL_PARAMS[lower(unescape(name))] then
            return true
        end
    end
    return false
end

local function content_type_ok(value)
    if value == nil then
        return true -- absent: treated as JSON, as the OpenAI API does
    end
    value = lower(value)
    local semicolon = find(value, ";", 1, true)
    if semicolon then
        value = sub(value, 1, semicolon - 1)
    end
    value = value:match("^%s*(.-)%s*$")
    return value == "application/json" or (find(value, "^application/[%w.-]+%+json$") ~= nil)
end

-- What a client reads in the 503 for each state of the health checks but "ready".
local NOT_READY = {
    loading = "is loading",
    unreachable = "is not reachable (scaled to zero, stopped or starting)",
}

-- Seconds in the Retry-After of a 503: healthCheck.retryAfterSeconds, else the check interval.
local function retry_after()
    local settings = config.health
    local seconds = tonumber(settings.retryAfterSeconds)
    if not seconds or seconds <= 0 then
        seconds = settings.intervalSeconds or 5
    end
    return tostring(seconds)
end

-- 503 model_not_ready + Retry-After when the model's last health check failed (loading or
-- unreachable); nil when it passed or has not run yet (such a model is proxied).
function _M.not_ready(name)
    local state = health.state(name)
    if state == nil or state == "ready" then
        return nil
    end
    return errors.new(503, "The model \"" .. name .. "\" " .. (NOT_READY[state] or "is not ready")
        .. "; retry later.", "model_not_ready", "model", { ["Retry-After"] = retry_after() })
end

-- The route for a request's model (nil = absent), or nil, err.
function _M.route_for(model, key)
    local route
    if model == nil then
        route = config.default_route
        if not route then
            return nil, errors.new(400, "The request has no \"model\" and the gateway has no default model; "
                .. "GET /v1/models lists the models.", "model_required", "model")
        end
    else
        route = config.by_name[model]
    end
    if not route or not auth.allows(key, route.name) then
        return nil, errors.new(404, "The model \"" .. tostring(model or route.name) .. "\" does not exist or you "
            .. "do not have access to it; GET /v1/models lists the models you can use.", "model_not_found", "model")
    end
    return route
end

-- Content handler of @gateway_error: nginx's own 502/503/504 for a routed request. When the
-- last connect to the model failed (refused, timed out) and its health check has found it not
-- ready meanwhile, the client gets the same 503 as access() answers; any other upstream error
-- keeps nginx's status (502 refused or reset, 504 timeout).
function _M.upstream_error()
    local var = ngx.var
    local model = var.gateway_model
    -- $upstream_connect_time ends in "-" when the last attempt never connected.
    if model and model ~= "" and find(var.upstream_connect_time or "", "%-$") then
        local err = _M.not_ready(model)
        if err then
            return errors.send(err)
        end
    end
    return errors.send_nginx_error()
end

local function fail(err)
    return errors.send(err)
end

function _M.access()
    if _M.credential_in_query(ngx.var.args) then
        return fail(errors.new(400, "Send the API key in the Authorization header, not in the URL.",
            "credential_in_query"))
    end
    local key, err = _M.caller()
    if key == nil then
        return fail(err)
    end
    if ngx.req.get_method() ~= "POST" then
        return fail(errors.new(405, "Use POST for " .. ngx.var.uri .. ".", "method_not_allowed", nil,
            { Allow = "POST" }))
    end
    if not content_type_ok(ngx.var.content_type) then
        return fail(errors.new(400, "The request's Content-Type must be application/json.", "invalid_content_type"))
    end
    local data
    data, err = body.read(config.max_body)
    if not data then
        return fail(err)
    end
    local model
    model, err = body.model(data)
    if err then
        return fail(err)
    end
    if model then
        ngx.var.gateway_requested_model = model
    end
    local route
    route, err = _M.route_for(model, key or nil)
    if not route then
        return fail(err)
    end
    local var = ngx.var
    -- Set before the readiness check: a 503 is logged, counted and labelled with its model.
    var.gateway_model = route.name
    err = _M.not_ready(route.name)
    if err then
        return fail(err)
    end
    var.gateway_upstream = route.upstream
    var.gateway_upstream_host = route.host
end

return _M

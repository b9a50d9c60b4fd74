-- access phase of the routed endpoints: API key, rate limit, method and
-- content type, body, model -> one of its pods (gateway_balancer), or 503 when
-- the model has no usable pod. Sets the nginx variables that proxy_pass and the
-- access log read; the body itself goes upstream untouched. Also the upstream
-- error page (upstream_error).
local config = require "gateway_config"
local errors = require "gateway_errors"
local body = require "gateway_body"
local auth = require "gateway_auth"
local budget = require "gateway_budget"
local usage = require "gateway_usage"
local health = require "gateway_health"
local balancer = require "gateway_balancer"
local metrics = require "gateway_metrics"
local cors = require "gateway_cors"
local hold = require "gateway_hold"

local ngx = ngx
local find = string.find
local gmatch = string.gmatch
local lower = string.lower
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local unescape = ngx.unescape_uri

local _M = {}

-- The caller's key entry (false when auth is off), or nil, err.
function _M.caller()
    if not config.auth_enabled then
        return false
    end
    local key, err = auth.authenticate(config.keys, ngx.sha1_bin)
    if not key then
        return nil, err
    end
    ngx.var.gateway_key = key.name
    return key
end

local BUDGET_MESSAGES = {
    requests = function(key, r) return "Rate limit of " .. key.requests_per_minute .. " requests per minute reached "
        .. "for this API key; retry after " .. r.retry_after .. " s." end,
    tokens = function(key, r) return "Token budget of " .. key.tokens_per_minute .. " tokens per minute used up "
        .. "for this API key; retry after " .. r.retry_after .. " s." end,
    pace = function(key) return "This API key is close to its budget of " .. key.tokens_per_minute .. " tokens "
        .. "per minute: one request at a time until it is charged; retry after 1 s." end,
}

local backend_logged = 0

-- A routed request of key against its budgets (gateway_budget); sets OpenAI's
-- x-ratelimit-* headers (through nginx variables) for the answer, whatever it
-- is. Returns true, or nil, err (429; or 503 when the budget backend is down
-- and budgets.failMode is closed).
function _M.admit(key, fields)
    if not key or not (key.requests_per_minute or key.tokens_per_minute) then
        return true
    end
    local estimate = math.floor((tonumber(ngx.var.http_content_length) or 0) / 4) + (fields.max_tokens or 256)
    local result, err = budget.check(key, config.budget, ngx.now(), estimate)
    local var = ngx.var
    if not result then
        metrics.budget_backend_error()
        if ngx.now() - backend_logged > 10 then
            backend_logged = ngx.now()
            ngx.log(ngx.ERR, "budget: Redis does not answer (", err, "); failMode ", config.budget.failMode)
        end
        if config.budget.failMode == "closed" then
            return nil, errors.new(503, "The gateway cannot check this API key's budget right now; retry later.",
                "budget_unavailable", nil, { ["Retry-After"] = "1" })
        end
        return true
    end
    if key.requests_per_minute then
        var.gateway_ratelimit_limit = key.requests_per_minute
        var.gateway_ratelimit_remaining = result.requests_left
        var.gateway_ratelimit_reset = result.reset_requests .. "s"
    end
    if key.tokens_per_minute then
        var.gateway_ratelimit_limit_tokens = key.tokens_per_minute
        var.gateway_ratelimit_remaining_tokens = result.tokens_left
        var.gateway_ratelimit_reset_tokens = result.reset_tokens .. "s"
    end
    if not result.ok then
        metrics.budget_rejection(key.name, result.reason)
        return nil, errors.new(429, BUDGET_MESSAGES[result.reason](key, result),
            result.reason == "requests" and "rate_limit_exceeded" or "token_budget_exceeded", nil,
            { ["Retry-After"] = tostring(result.retry_after) })
    end
    if key.tokens_per_minute then
        var.gateway_budget = key.name -- charged in log() with the tokens the answer used
    end
    return true
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

-- What a client reads in the 503 for each state of a model but "ready".
local NOT_READY = {
    loading = "is loading",
    unreachable = "is not reachable (its pods do not answer)",
    no_endpoints = "has no ready replica (scaled to zero, not deployed yet, or starting)",
    unknown = "is not discovered yet",
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

-- 503 model_not_ready + Retry-After for a model with no usable endpoint; nil when it has one.
function _M.not_ready(route)
    local state = health.summary(route)
    if state == "ready" then
        return nil
    end
    return errors.new(503, "The model \"" .. route.name .. "\" " .. (NOT_READY[state] or "is not ready")
        .. "; retry later.", "model_not_ready", "model", { ["Retry-After"] = retry_after() })
end

-- The route for a request's model (nil = absent) and the model it names (an
-- adapter's own name, else the route's), or nil, err. A key learns
-- nothing of models it may not use: without "model", its own default or the
-- gateway's (when the key may use it), else 400; a 404 names only what the
-- client sent, and suggests only a model the key may use.
function _M.route_for(model, key)
    if model == nil then
        local route = key and key.default_route or config.default_route
        if not route or not auth.allows(key, route.name) then
            return nil, errors.new(400, "The request has no \"model\"; GET /v1/models lists the models you can use.",
                "model_required", "model")
        end
        return route, route.name
    end
    local route, name = config.lookup(model)
    if route and auth.allows(key, name) then
        return route, name
    end
    local message = "The model \"" .. model .. "\" does not exist or you do not have access to it"
    local near = config.by_lower[lower(model)]
    if not route and near and auth.allows(key, near) then
        message = message .. "; did you mean \"" .. near .. "\"? (names are case-sensitive)"
    end
    return nil, errors.new(404, message .. "; GET /v1/models lists the models you can use.", "model_not_found",
        "model")
end

-- Content handler of @gateway_error: nginx's own 502/503/504 for a routed request. When the
-- last connect failed (refused, timed out) and the model has no usable pod left, the client
-- gets the same 503 as access() answers; any other upstream error keeps nginx's status
-- (502 refused or reset, 504 timeout). Once a connection was made the request was sent and
-- may have run: `x-should-retry: false` keeps the OpenAI SDKs from sending the generation
-- again (they retry 5xx by default).
function _M.upstream_error()
    local var = ngx.var
    local route = config.by_name[var.gateway_model or ""]
    -- $upstream_connect_time ends in "-" when the last attempt never connected.
    local connected = not find(var.upstream_connect_time or "-", "%-$")
    if route and not connected then
        local ep = balancer.endpoint_of(route, var.gateway_inflight)
        if ep then
            health.failed(route, ep)
        end
        local err = _M.not_ready(route)
        if err then
            return errors.send(err)
        end
    end
    if connected then
        var.gateway_should_retry = "false"
    end
    return errors.send_nginx_error()
end

local function fail(err)
    return errors.send(err)
end

-- Counts how a held request's wait ended. A closure made here, not in access():
-- a local of access() captured by a closure makes LuaJIT abort every trace
-- through its end ("NYI: bytecode 50", closing upvalues), on every request.
local function held_counter(route)
    return function(outcome) metrics.held(route, outcome) end
end

-- What the balancing policy of the route hashes: the session key (a header, or
-- a body field) or the prompt's leading part.
local function request_keys(route, src, fields, model)
    local b = route.balancing
    if b.policy == "session" then
        local key = b.header_var and ngx.var[b.header_var]
        if not key or key == "" then
            key = fields.sessions and fields.sessions[b.sessionField]
        end
        return { session = key }
    elseif b.policy == "prefix" then
        local prefix = body.prefix(src, fields, b.prefixLength)
        -- Each adapter has its own prefix cache on a pod (and a pod holds few adapters at once).
        if prefix and model ~= route.name then
            prefix = model .. "\0" .. prefix
        end
        return { prefix = prefix }
    end
    return {}
end

-- body filter of the routed location: the time to the first byte, and what
-- the usage accounting keeps of the answer (every chunk goes on unchanged).
function _M.body_filter()
    local ctx = ngx.ctx
    if not ctx.ttfb then
        metrics.first_byte(ctx)
    end
    local u = ctx.usage
    if u then
        usage.chunk(u, ngx.arg[1])
    end
end

-- log phase of the routed location and its error page: the request leaves
-- its endpoint's in-flight count; its tokens are counted and charged to the
-- key's token budget; then the request counters. A routed request's state is
-- read from ngx.ctx; the error page's named location has none (a failed
-- request charges nothing), nor has a request that was never routed: those
-- read the nginx variables.
function _M.log()
    local var, ctx = ngx.var, ngx.ctx
    local route, status = ctx.route, ngx.status
    local model, ep, upstream
    if route then
        balancer.release(ctx)
        model, ep = ctx.model, ctx.endpoint.id
        -- The answer is its pod's (nginx's own errors go to the error page), unless the
        -- client hung up before it came.
        upstream = status ~= 499 and status or nil
    else
        local key = balancer.release(ctx)
        hold.release() -- a routed request has left the hold already
        model = var.gateway_model
        ep = balancer.endpoint_of(config.by_name[model], key)
    end
    local u = ctx.usage
    local prompt, completion
    if u and status == 200 then
        local ttft, tpot
        prompt, completion, ttft, tpot = usage.finish(u, ngx.req.start_time(), ngx.now())
        metrics.usage(model, config.auth_enabled and var.gateway_key or "", u.stream, prompt, completion, ttft, tpot)
    end
    -- Only keys (auth.enabled) have budgets.
    local name = config.auth_enabled and var.gateway_budget
    if name and name ~= "" then
        var.gateway_budget = ""
        local tokens = prompt and (prompt + completion) or (u and usage.estimate(u, var.request_length) or 0)
        budget.charge(name, tokens, config.budget, ngx.now())
    end
    metrics.log(model, status, ctx.ttfb, ep, upstream)
end

local POST = { "POST" }

-- Content-Encoding the gateway can read: none. A compressed body cannot be
-- routed (nor read by vLLM or llama-server), so it is refused by name.
local function encoding_error()
    local encoding = ngx.var.http_content_encoding
    if encoding and encoding ~= "" and lower(encoding) ~= "identity" then
        return errors.new(415, "The request body is sent with Content-Encoding " .. encoding .. "; the gateway "
            .. "(and the model servers) read only uncompressed JSON: send it without compression.",
            "unsupported_content_encoding")
    end
end

function _M.access()
    local method = ngx.req.get_method()
    if cors.handle(POST, method) then
        return
    end
    if _M.credential_in_query(ngx.var.args) then
        return fail(errors.new(400, "Send the API key in the Authorization header, not in the URL.",
            "credential_in_query"))
    end
    local key, err = _M.caller()
    if key == nil then
        return fail(err)
    end
    if method ~= "POST" then
        return fail(errors.new(405, "Use POST for " .. ngx.var.uri .. ".", "method_not_allowed", nil,
            { Allow = "POST" }))
    end
    if not content_type_ok(ngx.var.content_type) then
        return fail(errors.new(400, "The request's Content-Type must be application/json, not "
            .. tostring(ngx.var.content_type) .. ".", "invalid_content_type"))
    end
    err = encoding_error()
    if err then
        return fail(err)
    end
    local src
    src, err = body.open(config.max_body)
    if not src then
        return fail(err)
    end
    local fields, route, model, request
    fields, err = body.scan(src, config.session_fields)
    if fields then
        if fields.model then
            ngx.var.gateway_requested_model = fields.model
        end
        route, model = _M.route_for(fields.model, key or nil)
        if route then
            request = request_keys(route, src, fields, model)
        else
            err = model
        end
    end
    body.close(src)
    if not route then
        return fail(err)
    end
    local var = ngx.var
    -- Set before the readiness check: a 503 is logged, counted and labelled with its model.
    var.gateway_model = model
    if model ~= route.name then
        var.gateway_route = route.name -- an adapter's model (X-Gateway-Model upstream)
    end
    local ok
    ok, err = _M.admit(key or nil, fields)
    if not ok then
        return fail(err)
    end
    local ep, decision, candidates = balancer.choose(route, request)
    if not ep and route.hold.timeoutSeconds > 0 then
        local waited
        ep, waited, candidates = hold.wait(route, request, held_counter(route), retry_after())
        if not ep then
            return fail(waited)
        end
        decision = waited
    end
    if not ep then
        return fail(_M.not_ready(route) or errors.new(503, "The model \"" .. route.name
            .. "\" has no usable replica; retry later.", "model_not_ready", "model",
            { ["Retry-After"] = retry_after() }))
    end
    local ctx = ngx.ctx
    ctx.route, ctx.model, ctx.endpoint, ctx.request, ctx.candidates = route, model, ep, request, candidates
    if config.usage_enabled then
        usage.start(ctx, fields.stream, key and key.tokens_per_minute ~= nil)
    end
    balancer.acquire(route, ep, ctx)
    var.gateway_upstream_host = route.host
    if route.closeAfterStream and fields.stream then
        var.gateway_upstream_connection = "close"
    end
    metrics.decision(route, decision)
end

return _M

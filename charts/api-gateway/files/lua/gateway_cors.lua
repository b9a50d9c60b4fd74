-- CORS for browser apps (cors.allowedOrigins). A preflight (OPTIONS with
-- Access-Control-Request-Method) is answered before authentication: it
-- carries no credentials by design. An allowed Origin is echoed on every
-- answer through nginx variables (add_header in nginx.conf). No origin is
-- allowed by default, and credentials (cookies) never are: the API takes
-- bearer keys in a header.
local config = require "gateway_config"
local errors = require "gateway_errors"

local ngx = ngx
local concat = table.concat

local _M = {
    -- What a browser app may read from an answer.
    EXPOSE = "X-Request-Id, X-Gateway-Model, Retry-After, x-ratelimit-limit-requests, "
        .. "x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
        .. "x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens",
}

-- The Origin to echo, or nil when CORS is off or the origin is not allowed.
function _M.allowed_origin(origin)
    local settings = config.cors
    if not origin or origin == "" or not settings.origins then
        return nil
    end
    if settings.any then
        return "*"
    end
    return settings.origins[origin] and origin or nil
end

-- Every request of the API locations: echo an allowed Origin. Returns true
-- when this was a preflight, answered here (the caller returns). method: the
-- request's, when the caller has read it.
function _M.handle(methods, method)
    local var = ngx.var
    local origin, allowed
    if config.cors.origins then -- CORS off (the default): no Origin to read
        origin = var.http_origin
        allowed = _M.allowed_origin(origin)
        if allowed then
            var.gateway_cors_origin = allowed
            var.gateway_cors_expose = _M.EXPOSE
        end
        if origin and origin ~= "" then
            var.gateway_cors_vary = "Origin"
        end
    end
    if (method or ngx.req.get_method()) ~= "OPTIONS" or not var.http_access_control_request_method then
        return false
    end
    origin = origin or var.http_origin
    if not allowed then
        errors.send(errors.new(403, "Cross-origin requests from " .. tostring(origin)
            .. " are not allowed: add the origin to the gateway's cors.allowedOrigins.", "cors_origin_not_allowed"))
        return true
    end
    local header = ngx.header
    header["Access-Control-Allow-Methods"] = concat(methods, ", ") .. ", OPTIONS"
    header["Access-Control-Allow-Headers"] = config.cors.headers
    header["Access-Control-Max-Age"] = config.cors.maxAgeSeconds
    ngx.status = 204
    ngx.exit(204)
    return true
end

return _M

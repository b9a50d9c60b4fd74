-- Every error the gateway answers goes out through send(), in the OpenAI
-- envelope: an "error" object with message, type, param and code. Other modules build
-- error objects with new() and `return nil, err`; only the phase entry points send.
local cjson = require "cjson.safe"

local ngx = ngx
local encode = cjson.encode
local null = cjson.null
local pairs = pairs
local setmetatable = setmetatable
local tonumber = tonumber

local _M = {}

local TYPES = {
    [400] = "invalid_request_error",
    [401] = "invalid_request_error",
    [403] = "invalid_request_error",
    [404] = "invalid_request_error",
    [405] = "invalid_request_error",
    [408] = "invalid_request_error",
    [413] = "invalid_request_error",
    [414] = "invalid_request_error",
    [415] = "invalid_request_error",
    [429] = "rate_limit_error",
    [503] = "service_unavailable",
}

-- Errors nginx itself raises (error_page -> @gateway_error), never its HTML pages.
local NGINX_ERRORS = {
    [400] = { "The request is not valid HTTP.", "bad_request" },
    [408] = { "The request body did not arrive in time.", "request_timeout" },
    [411] = { "The request needs a Content-Length or chunked body.", "length_required" },
    [413] = { "The request body is larger than the gateway's limit.", "request_too_large" },
    [414] = { "The request URI is too long.", "uri_too_long" },
    [494] = { "The request headers are too large.", "headers_too_large" },
    [500] = { "The gateway failed to handle the request.", "internal_error" },
    [501] = { "The request's Transfer-Encoding is not supported.", "unsupported_transfer_encoding" },
    [502] = { "The model server refused or reset the connection.", "upstream_unavailable" },
    [503] = { "The model server is not available.", "upstream_unavailable" },
    [504] = { "The model server did not answer in time.", "upstream_timeout" },
    [505] = { "The HTTP version is not supported.", "http_version_not_supported" },
}

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.status .. " " .. e.message end

-- An error object: status, message, code (machine readable), param, extra headers.
function _M.new(status, message, code, param, headers)
    return setmetatable({ status = status, message = message, code = code, param = param,
                          headers = headers }, Error)
end

function _M.type_for(status)
    return TYPES[status] or (status >= 500 and "server_error") or "invalid_request_error"
end

function _M.body(status, message, code, param)
    return encode({ error = {
        message = message,
        type = _M.type_for(status),
        param = param or null,
        code = code or null,
    } })
end

-- Sends the error and ends the request. Usage: return errors.send(err)
function _M.send(err)
    local status = err.status
    ngx.status = status
    local header = ngx.header
    header["Content-Type"] = "application/json"
    if err.headers then
        for name, value in pairs(err.headers) do
            header[name] = value
        end
    end
    ngx.print(_M.body(status, err.message, err.code, err.param), "\n")
    return ngx.exit(ngx.HTTP_OK)
end

-- Content handler of @gateway_error: turns nginx's own error pages into the envelope.
function _M.send_nginx_error()
    local original = tonumber(ngx.var.status) or 500
    local known = NGINX_ERRORS[original]
    if not known then
        original = original >= 500 and 500 or original
        known = NGINX_ERRORS[original] or { "The request was rejected.", "bad_request" }
    end
    -- 494 is nginx's internal "headers too large"; clients get 400.
    local status = original == 494 and 400 or original
    return _M.send(_M.new(status, known[1], known[2]))
end

return _M

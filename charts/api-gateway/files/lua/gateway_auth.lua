-- API keys: `Authorization: Bearer <key>` (or `x-api-key: <key>`), checked
-- against the keys loaded by gateway_config. Keys are compared as SHA-1
-- digests in constant time, over every key, and never logged (only names are).
local errors = require "gateway_errors"

local ngx = ngx
local byte = string.byte
local match = string.match
local abs = math.abs

local _M = {}

-- Constant-time comparison of two digests (same length by construction).
function _M.equal(a, b)
    if #a ~= #b then
        return false
    end
    local diff = 0
    for i = 1, #a do
        diff = diff + abs(byte(a, i) - byte(b, i))
    end
    return diff == 0
end

-- The key the client sent, or nil.
function _M.presented()
    local header = ngx.var.http_authorization
    if header then
        local token = match(header, "^[Bb]earer%s+(%S+)%s*$")
        if token then
            return token
        end
    end
    local key = ngx.var.http_x_api_key
    if key and key ~= "" then
        return key
    end
    return nil
end

-- The matching key entry, or nil, err (401).
function _M.authenticate(keys, digest)
    local token = _M.presented()
    if not token then
        return nil, errors.new(401, "Missing API key: send it as \"Authorization: Bearer <key>\".",
            "invalid_api_key", nil, { ["WWW-Authenticate"] = "Bearer" })
    end
    local presented = digest(token)
    local found
    for i = 1, #keys do
        local key = keys[i]
        if _M.equal(key.digest, presented) and not found then
            found = key
        end
    end
    if not found then
        return nil, errors.new(401, "Invalid API key.", "invalid_api_key", nil, { ["WWW-Authenticate"] = "Bearer" })
    end
    return found
end

-- Whether this key may use the model (canonical name).
function _M.allows(key, name)
    return key == nil or key.all or key.models[name] == true
end

return _M

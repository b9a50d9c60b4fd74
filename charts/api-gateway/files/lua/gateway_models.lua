-- GET /v1/models and /v1/models/{id}, answered by the gateway from its
-- routing table and the endpoint and health caches (never a live fan-out), listing
-- only the models the caller's key may use. Each entry carries its aliases
-- and readiness; aliases are not listed as separate entries.
local cjson = require "cjson.safe"
local config = require "gateway_config"
local errors = require "gateway_errors"
local router = require "gateway_router"
local auth = require "gateway_auth"
local health = require "gateway_health"
local cors = require "gateway_cors"

local ngx = ngx
local tostring = tostring
local concat = table.concat
local ipairs = ipairs
local encode = cjson.encode

local _M = {}

-- A JSON list, "[]" when empty (Debian's lua-cjson has no array metatable and
-- would write an empty table as {}).
local function json_list(items)
    if #items == 0 then
        return "[]"
    end
    return encode(items)
end

-- One model object, as JSON text (fields in a fixed order). Beyond OpenAI's
-- fields (which clients read; they ignore the rest): aliases, ready, status
-- and replicas {ready, total}: the model's pods the gateway can use, and found.
function _M.entry(route)
    local state, ready, total = health.summary(route)
    return concat({
        '{"id":', encode(route.name),
        ',"object":"model","created":', config.created or 0,
        ',"owned_by":"llm-stack","aliases":', json_list(route.aliases or {}),
        ',"ready":', state == "unknown" and "null" or tostring(state == "ready"),
        ',"status":', encode(state),
        -- The two closing braces are written apart: together they read as template markup.
        ',"replicas":{"ready":', ready, ',"total":', total, "}", "}",
    })
end

local function respond(text)
    ngx.header["Content-Type"] = "application/json"
    ngx.print(text, "\n")
end

local GET = { "GET", "HEAD" }

local function allowed_caller()
    local method = ngx.req.get_method()
    if method ~= "GET" and method ~= "HEAD" then
        return nil, errors.new(405, "Use GET for " .. ngx.var.uri .. ".", "method_not_allowed", nil, { Allow = "GET" })
    end
    return router.caller()
end

-- GET /v1/models
function _M.list()
    if cors.handle(GET) then
        return
    end
    local key, err = allowed_caller()
    if key == nil then
        return errors.send(err)
    end
    local data = {}
    for _, route in ipairs(config.routes) do
        if auth.allows(key or nil, route.name) then
            data[#data + 1] = _M.entry(route)
        end
    end
    respond('{"object":"list","data":[' .. concat(data, ",") .. "]}")
end

-- GET /v1/models/{id}: by name or alias.
function _M.get(id)
    if cors.handle(GET) then
        return
    end
    local key, err = allowed_caller()
    if key == nil then
        return errors.send(err)
    end
    local route = config.by_name[id]
    if not route or not auth.allows(key or nil, route.name) then
        return errors.send(errors.new(404, "The model \"" .. id .. "\" does not exist or you do not have access "
            .. "to it; GET /v1/models lists the models you can use.", "model_not_found", "model"))
    end
    respond(_M.entry(route))
end

return _M

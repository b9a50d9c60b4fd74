-- GET /v1/models and /v1/models/{id}, answered by the gateway from its
-- routing table and the endpoint and health caches (never a live fan-out), listing
-- only the models the caller's key may use. Each entry carries its aliases
-- and readiness; aliases are not listed as separate entries, LoRA adapters are
-- (after their model, as vLLM lists them).
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
-- fields (which clients read; they ignore the rest): parent and root as vLLM
-- writes them (a LoRA adapter's parent is its model, its root the adapter's
-- source; a model's parent is null), aliases, ready, status and replicas
-- {ready, total}: the model's pods the gateway can use, and found. `name`: an
-- adapter of the route; nil for the route's model itself.
function _M.entry(route, name)
    local state, ready, total = health.summary(route)
    local lineage = ',"parent":null'
    if name then
        lineage = ',"parent":' .. encode(route.name) .. ',"root":' .. encode(route.adapter_source[name])
    end
    return concat({
        '{"id":', encode(name or route.name),
        ',"object":"model","created":', config.created or 0,
        ',"owned_by":"llm-stack"', lineage, ',"aliases":', name and "[]" or json_list(route.aliases or {}),
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
        for _, adapter in ipairs(route.adapters) do
            if auth.allows(key or nil, adapter.name) then
                data[#data + 1] = _M.entry(route, adapter.name)
            end
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
    local route, name = config.lookup(id)
    if not route or not auth.allows(key or nil, name) then
        return errors.send(errors.new(404, "The model \"" .. id .. "\" does not exist or you do not have access "
            .. "to it; GET /v1/models lists the models you can use.", "model_not_found", "model"))
    end
    respond(_M.entry(route, name ~= route.name and name or nil))
end

return _M

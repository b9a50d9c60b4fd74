-- The gateway's own small answers: /readyz and the JSON 404 for unknown paths.
local config = require "gateway_config"
local errors = require "gateway_errors"
local endpoints = require "gateway_endpoints"

local ngx = ngx
local concat = table.concat

local _M = {}

-- /readyz: ready once the configuration is loaded and the first endpoint
-- discovery round has run (models may still be loading or absent).
function _M.ready()
    if not config.loaded then
        return errors.send(errors.new(503, "The gateway's configuration is not loaded.", "not_ready"))
    end
    if not endpoints.resolved() then
        return errors.send(errors.new(503, "The gateway has not looked up its models' endpoints yet.", "not_ready"))
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"status":"ready","models":', #config.routes, '}\n')
end

-- The JSON 404 for a path the gateway does not serve, naming those it does
-- (gateway.json's endpoints: the one list nginx.conf's locations come from too).
function _M.not_found()
    local uri = ngx.var.uri
    local message = "Unknown endpoint " .. ngx.req.get_method() .. " " .. uri
    local bare = uri:match("^(.-)/+$")
    if bare and (bare == "/v1/models" or config.served[bare]) then
        message = message .. ": remove the trailing slash (" .. bare .. ")."
    else
        message = message .. "; the gateway serves POST " .. concat(config.endpoints, ", ") .. " and GET /v1/models."
    end
    return errors.send(errors.new(404, message, "unknown_endpoint"))
end

return _M

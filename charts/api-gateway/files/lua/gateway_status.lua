-- The gateway's own small answers: /readyz and the JSON 404 for unknown paths.
local config = require "gateway_config"
local errors = require "gateway_errors"

local ngx = ngx

local _M = {}

-- /readyz: ready once the configuration is loaded (models may still be loading).
function _M.ready()
    if not config.loaded then
        return errors.send(errors.new(503, "The gateway's configuration is not loaded.", "not_ready"))
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"status":"ready","models":', #config.routes, '}\n')
end

function _M.not_found()
    return errors.send(errors.new(404, "Unknown endpoint " .. ngx.req.get_method() .. " " .. ngx.var.uri
        .. "; the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, "
        .. "/tokenize, /detokenize and GET /v1/models.", "unknown_endpoint"))
end

return _M

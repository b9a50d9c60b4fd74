-- init_worker: what each nginx worker starts with. Its own random seed (ties
-- in least-request, DNS query ids), then, in worker 0 only, the two timers
-- that keep the shared state fresh: endpoint discovery and the health checks.
local endpoints = require "gateway_endpoints"
local health = require "gateway_health"

local ngx = ngx

local _M = {}

function _M.start()
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
    endpoints.start()
    health.start()
end

return _M

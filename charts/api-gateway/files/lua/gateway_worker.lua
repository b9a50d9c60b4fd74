-- init_worker: what each nginx worker starts with. Its own random seed (ties
-- in least-request, DNS query ids), then, in worker 0 only, the timers that
-- keep the shared state fresh (endpoint discovery, the health checks) and the
-- one that follows the mounted routing table; in every worker, the one that
-- adds its metrics to the shared counters.
local endpoints = require "gateway_endpoints"
local health = require "gateway_health"
local reload = require "gateway_reload"
local metrics = require "gateway_metrics"

local ngx = ngx

local _M = {}

function _M.start()
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
    endpoints.start()
    health.start()
    reload.start()
    metrics.start()
end

return _M

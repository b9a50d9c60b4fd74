-- A catalog change without a pod roll. The routing table (routes.json) is
-- mounted from the chart's ConfigMap, which the kubelet refreshes in place when
-- the catalog changes. Worker 0 compares the file with what the master loaded
-- every reload.intervalSeconds and, on a difference, asks the master for a
-- graceful reload (SIGHUP, as `nginx -s reload` does): new workers load the new
-- table, the old ones finish their requests and streams (worker_shutdown_timeout)
-- and the shared dicts (endpoints, in-flight counts, metrics) carry over. A file
-- that does not load leaves the running workers as they are: the master logs
-- why, and this worker asks once per distinct content, not on every tick.
local config = require "gateway_config"

local ngx = ngx
local io_open = io.open
local tonumber = tonumber
local pcall = pcall

local SIGHUP = 1

local _M = {}

local function read(path)
    local file = io_open(path, "rb")
    if not file then
        return nil
    end
    local text = file:read("*a")
    file:close()
    return text
end

local asked -- the content this worker last asked a reload for

local function check(premature)
    if premature or ngx.worker.exiting() then
        return
    end
    local text = read(config.routes_file)
    if not text or text == config.routes_text or text == asked then
        return
    end
    asked = text
    -- Loaded here, on a change only: nothing else in the gateway needs them.
    local ffi = require "ffi"
    pcall(ffi.cdef, "int kill(int pid, int sig);") -- once per Lua VM; a second cdef raises
    local master = require("ngx.process").get_master_pid()
    if not master then
        ngx.log(ngx.ERR, "api-gateway: routes.json changed, but nginx runs without a master process to reload")
        return
    end
    ngx.log(ngx.WARN, "api-gateway: routes.json changed; reloading nginx (requests in flight finish)")
    if ffi.C.kill(master, SIGHUP) ~= 0 then
        ngx.log(ngx.ERR, "api-gateway: cannot signal the nginx master (pid ", master, ") to reload")
    end
end

-- init_worker, worker 0 only: a timer when reload.intervalSeconds > 0.
function _M.start()
    local interval = tonumber(config.reload.intervalSeconds) or 0
    if interval <= 0 or ngx.worker.id() ~= 0 then
        return
    end
    local ok, err = ngx.timer.every(interval, check)
    if not ok then
        ngx.log(ngx.ERR, "api-gateway: cannot start the routes.json watch: ", err)
    end
end

return _M

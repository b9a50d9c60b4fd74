-- Holding a request while its model wakes up. A model with no usable pod
-- (scaled to zero, or its pods still starting) whose `hold.timeoutSeconds` is
-- set keeps the request waiting until a pod appears, then routes it; streams
-- alike, since nothing was sent yet. The number held per model is in the
-- metrics (gateway_requests_held, and gateway_model_demand = held + in flight,
-- which a scaler reads to wake a model from zero). A client that hangs up ends
-- its wait (lua_check_client_abort); at most `hold.maxRequests` wait per model
-- on a gateway pod, each holding a connection and its request body.
local balancer = require "gateway_balancer"
local errors = require "gateway_errors"

local ngx = ngx
local max = math.max
local min = math.min
local tostring = tostring

local _M = { DICT = "gateway_inflight" }

local function held_key(route)
    return "held\0" .. route.name
end

-- Requests of the model waiting on this gateway pod now.
function _M.held(route)
    return ngx.shared[_M.DICT]:get(held_key(route)) or 0
end

-- The waiting request leaves the count (idempotent: the variable says whether it is counted).
function _M.release()
    balancer.decrement("gateway_held")
end

-- Waits for a usable pod of route. Returns the endpoint, the decision and the
-- number of candidates; or nil, err (a 503 with Retry-After: the wait ran out
-- or too many are waiting). Counts outcomes through `count(outcome)`.
function _M.wait(route, request, count, retry_after)
    local hold = route.hold
    local dict = ngx.shared[_M.DICT]
    local key = held_key(route)
    local n = dict:incr(key, 1, 0)
    ngx.var.gateway_held = key
    if n > hold.maxRequests then
        _M.release()
        count("full")
        return nil, errors.new(503, "The model \"" .. route.name .. "\" is starting and " .. hold.maxRequests
            .. " requests already wait for it on this gateway; retry later.", "model_not_ready", "model",
            { ["Retry-After"] = retry_after })
    end
    local ok = ngx.on_abort(function()
        _M.release()
        count("gone")
        return ngx.exit(499)
    end)
    if not ok then
        ngx.log(ngx.WARN, "hold: lua_check_client_abort is off; a client that hangs up keeps waiting")
    end
    local deadline = ngx.now() + hold.timeoutSeconds
    local interval = 0.05
    while true do
        ngx.update_time()
        local left = deadline - ngx.now()
        if left <= 0 then
            break
        end
        -- Never sleep(0): it does not advance nginx's clock, and the loop would spin.
        ngx.sleep(max(0.01, min(interval, left)))
        local ep, decision, candidates = balancer.choose(route, request)
        if ep then
            _M.release()
            count("routed")
            return ep, decision, candidates
        end
        interval = min(interval * 2, 0.5)
    end
    _M.release()
    count("timeout")
    return nil, errors.new(503, "The model \"" .. route.name .. "\" did not get a ready replica within "
        .. tostring(hold.timeoutSeconds) .. " s; retry later.", "model_not_ready", "model",
        { ["Retry-After"] = retry_after })
end

return _M

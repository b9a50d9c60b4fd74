-- Which pod of a model gets a request. One implementation per policy, in a
-- dispatch table (new(list) builds per-worker state when the endpoints change;
-- pick(state, request, usable) chooses):
--   least-request  the fewest in-flight requests on this gateway pod (all its
--                  workers), ties broken at random;
--   round-robin    each endpoint in turn;
--   session        consistent hashing of a session key (a header or a body
--                  field): the same key goes to the same pod;
--   prefix         consistent hashing with bounded loads over the prompt's
--                  leading part: requests that share a system prompt or a
--                  conversation reach the pod that has it cached, and no pod
--                  takes more than loadFactor x the average in-flight load;
--                  warmLoadFactor for the pod this gateway pod last sent the
--                  key to (within warmSeconds), which likely holds it cached,
--                  and then a new key also goes to no pod that got more than
--                  its share of the new keys lately (so a few system prompts
--                  spread instead of hashing onto one pod), unless no pod
--                  within the load bound is under its share.
-- The hash ring depends only on the endpoint set, so every gateway replica
-- makes the same choice for the same input without shared state (unless
-- warmSeconds > 0: then each spreads its own new keys), and when a pod goes
-- away only its share of the keys moves. A request without a key
-- falls back to least-request. balance() is the balancer_by_lua entry point:
-- it sets the chosen peer, and on a failed connect retries another pod (nginx
-- never resends a request it has sent).
local health = require "gateway_health"
local bit = require "bit"

local ngx = ngx
local crc32 = ngx.crc32_long
local band = bit.band
local bxor = bit.bxor
local rshift = bit.rshift
local tobit = bit.tobit
local ceil = math.ceil
local max = math.max
local floor = math.floor
local random = math.random
local sort = table.sort
local sub = string.sub
local ipairs = ipairs

local _M = { DICT = "gateway_inflight", WARM_DICT = "gateway_warm", VNODES = 160 }

-- (a * b) mod 2^32 without losing bits to doubles: split b in 16-bit halves.
local function mul32(a, b)
    local lo = a * band(b, 0xffff)
    local hi = band(a * rshift(b, 16), 0xffff)
    return tobit(lo + hi * 65536)
end

-- A well-spread 32-bit hash: CRC-32 (C speed in nginx) through MurmurHash3's
-- finalizer. CRC alone is linear, so keys that differ in a few characters
-- ("user-1", "user-2") would land close together on the ring.
local function hash(s)
    local h = crc32(s)
    h = bxor(h, rshift(h, 16))
    h = mul32(h, 0x85ebca6b)
    h = bxor(h, rshift(h, 13))
    h = mul32(h, 0xc2b2ae35)
    h = bxor(h, rshift(h, 16))
    return h < 0 and h + 4294967296 or h
end
_M.hash = hash

local function inflight_key(route, ep)
    return route.name .. "\0" .. ep.id
end

-- In-flight requests of one endpoint on this gateway pod.
local function load_of(dict, route, ep)
    return dict:get(inflight_key(route, ep)) or 0
end

local function least_loaded(dict, route, candidates)
    local best, best_load, ties = nil, nil, 0
    for _, ep in ipairs(candidates) do
        local load = load_of(dict, route, ep)
        if not best or load < best_load then
            best, best_load, ties = ep, load, 1
        elseif load == best_load then
            ties = ties + 1
            if random(ties) == 1 then -- reservoir sampling: each tie equally likely
                best = ep
            end
        end
    end
    return best
end

-- The ring: VNODES points per endpoint, sorted; each point names its endpoint.
local function ring_of(list)
    local points = {}
    for _, ep in ipairs(list) do
        for v = 1, _M.VNODES do
            points[#points + 1] = { hash(ep.id .. "#" .. v), ep }
        end
    end
    sort(points, function(a, b)
        if a[1] == b[1] then
            return a[2].id < b[2].id
        end
        return a[1] < b[1]
    end)
    return points
end

-- Index of the first point at or after hash h (wrapping to 1).
local function first_point(points, h)
    local lo, hi = 1, #points
    if h > points[hi][1] then
        return 1
    end
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if points[mid][1] < h then
            lo = mid + 1
        else
            hi = mid
        end
    end
    return lo
end

-- Consistent hashing, bounded when factor > 0: walk the ring from the key's
-- point (hash h); take the first usable endpoint whose load stays within
-- ceil(factor x (total + 1) / n). The endpoint `warm` (the one that last got
-- the key) comes first, within the same with warm_factor. Returns the endpoint
-- and the decision: "affinity" (the key's own endpoint: its warm one, else the
-- ring's), "failover" (its own is unusable) or "spill" (its own is over its
-- bound). `keys` (id -> new keys lately, for a key not remembered) adds a
-- second bound, ceil((all + 1) / n): where no pod is within both, the load
-- bound alone decides.
local function hashed(dict, route, points, h, candidates, factor, warm, warm_factor, keys)
    local usable, n, total, all = {}, 0, 0, 0
    for _, ep in ipairs(candidates) do
        usable[ep.id] = ep
        n = n + 1
        if factor > 0 then
            total = total + load_of(dict, route, ep)
        end
        if keys then
            all = all + keys[ep.id]
        end
    end
    local bound = factor > 0 and ceil(factor * (total + 1) / n) or nil
    local own = warm and usable[warm]
    if own and (not bound or load_of(dict, route, own) < ceil(max(factor, warm_factor or 0) * (total + 1) / n)) then
        return own, "affinity"
    end
    local key_bound = keys and ceil((all + 1) / n)
    local count = #points
    local start = first_point(points, h)
    for pass = 1, key_bound and 2 or 1 do
        local seen, owner = {}, nil
        for k = 0, count - 1 do
            local ep = points[(start + k - 1) % count + 1][2]
            if not seen[ep.id] then
                seen[ep.id] = true
                owner = owner or ep
                if usable[ep.id] and (not bound or load_of(dict, route, ep) < bound)
                    and (pass == 2 or not key_bound or keys[ep.id] < key_bound) then
                    if ep == owner and not warm then
                        return ep, "affinity"
                    end
                    local own_usable = warm and own or (not warm and usable[owner.id])
                    return ep, own_usable and "spill" or "failover"
                end
            end
        end
    end
    return nil
end

-- New keys placed on each candidate lately: this window of warmSeconds plus
-- the share of the last one not yet passed (a sliding count, no key list).
local function key_window(now, seconds)
    local w = now / seconds
    return floor(w), 1 - (w - floor(w))
end

local function new_keys(warm_dict, route, candidates, now, seconds)
    local w, rest = key_window(now, seconds)
    local out = {}
    for _, ep in ipairs(candidates) do
        local prefix = "k\0" .. route.name .. "\0" .. ep.id .. "\0"
        out[ep.id] = (warm_dict:get(prefix .. w) or 0) + (warm_dict:get(prefix .. (w - 1)) or 0) * rest
    end
    return out
end

local function count_new_key(warm_dict, route, ep, now, seconds)
    local w = key_window(now, seconds)
    warm_dict:incr("k\0" .. route.name .. "\0" .. ep.id .. "\0" .. w, 1, 0, 2 * seconds)
end

_M.IMPLEMENTATIONS = {
    ["least-request"] = {
        new = function() return {} end,
        pick = function(_, dict, route, _, candidates)
            return least_loaded(dict, route, candidates), "pick"
        end,
    },
    ["round-robin"] = {
        new = function(list) return { list = list, next = random(#list > 0 and #list or 1) } end,
        pick = function(state, _, _, _, candidates, usable)
            local list = state.list
            for _ = 1, #list do
                local ep = list[(state.next - 1) % #list + 1]
                state.next = state.next % #list + 1
                if usable[ep.id] then
                    return ep, "pick"
                end
            end
            return candidates[1], "pick"
        end,
    },
}

-- bounded: the prefix policy spills over loadFactor, and remembers each key's
-- pod (gateway_warm, per gateway pod, warmSeconds), which is allowed
-- warmLoadFactor, because waiting there behind a request beats a cold prefill
-- elsewhere, while a key not seen lately (a prompt shared with nothing) keeps
-- the tight bound and never queues behind unrelated work. A new key is
-- remembered where it went, spilled or not (its prefix is cached there and
-- nowhere else), and counts towards that pod's share of new keys; a spill of a
-- remembered key is a one-off. A session never moves while its pod is usable.
local function hashing(key_of, bounded)
    return {
        new = function(list) return { points = #list > 0 and ring_of(list) or nil } end,
        pick = function(state, dict, route, request, candidates)
            local key = key_of(request)
            if not key or not state.points then
                return least_loaded(dict, route, candidates), "no_key"
            end
            local h = hash(key)
            local b = route.balancing
            if not bounded then
                return hashed(dict, route, state.points, h, candidates, 0)
            end
            if b.warmSeconds <= 0 then
                return hashed(dict, route, state.points, h, candidates, b.loadFactor)
            end
            local warm_dict, now = ngx.shared[_M.WARM_DICT], ngx.now()
            local warm_key = route.name .. "\0" .. h
            local warm = warm_dict:get(warm_key)
            local ep, decision = hashed(dict, route, state.points, h, candidates, b.loadFactor, warm,
                                        b.warmLoadFactor,
                                        not warm and new_keys(warm_dict, route, candidates, now, b.warmSeconds))
            if ep and (not warm or decision ~= "spill") then
                if ep.id ~= warm then
                    count_new_key(warm_dict, route, ep, now, b.warmSeconds)
                end
                warm_dict:set(warm_key, ep.id, b.warmSeconds)
            end
            return ep, decision
        end,
    }
end

_M.IMPLEMENTATIONS.session = hashing(function(request) return request.session end, false)
_M.IMPLEMENTATIONS.prefix = hashing(function(request) return request.prefix end, true)

-- Per worker: route name -> { list = the endpoint list it was built for, state }
local instances = {}

-- Chooses an endpoint for a request of `route`, skipping `tried` ids.
-- request: { session = key or nil, prefix = key or nil }. Returns the endpoint,
-- the decision and the number of usable endpoints; nil when none is usable.
function _M.choose(route, request, tried)
    local list, states = health.endpoints(route)
    local now = ngx.now()
    local candidates, usable = {}, {}
    for _, ep in ipairs(list) do
        if not (tried and tried[ep.id]) and health.usable(states, ep, now) then
            candidates[#candidates + 1] = ep
            usable[ep.id] = true
        end
    end
    if #candidates == 0 then
        return nil
    end
    local impl = _M.IMPLEMENTATIONS[route.balancing.policy]
    local inst = instances[route.name]
    if not inst or inst.list ~= list or inst.policy ~= route.balancing.policy then
        inst = { list = list, policy = route.balancing.policy, state = impl.new(list) }
        instances[route.name] = inst
    end
    if #candidates == 1 then
        return candidates[1], "single", 1
    end
    local ep, decision = impl.pick(inst.state, ngx.shared[_M.DICT], route, request, candidates, usable)
    return ep, decision, #candidates
end

-- Counts the request in flight on the endpoint until release(ctx). The key is
-- kept in ngx.ctx, read by the routed location's log phase, and in an nginx
-- variable: the error page's named location clears ngx.ctx; it finds the pod
-- in the key (endpoint_of), and its log phase must still release the count.
function _M.acquire(route, ep, ctx)
    local key = inflight_key(route, ep)
    ctx.inflight = key
    ngx.var.gateway_inflight = key
    ngx.shared[_M.DICT]:incr(key, 1, 0)
end

-- The endpoint (pod id) of route in an in-flight key, or nil for none.
function _M.endpoint_of(route, key)
    if route and key and key ~= "" then
        return sub(key, #route.name + 2)
    end
end

local function take_one(key)
    local dict = ngx.shared[_M.DICT]
    local left = dict:incr(key, -1, 0)
    if left and left <= 0 then
        dict:delete(key)
    end
end

-- Takes one off the shared counter whose key the request variable var_name
-- holds, once (the variable is emptied), and drops a counter that reaches 0.
-- Returns the key (nil when there was none). Shared by the in-flight count
-- here and the held count (gateway_hold).
function _M.decrement(var_name)
    local var = ngx.var
    local key = var[var_name]
    if key and key ~= "" then
        var[var_name] = ""
        take_one(key)
        return key
    end
end

-- The request is no longer in flight (once). ctx.route set: the request's own
-- ngx.ctx (the key is there, no variable to read); else the error page's,
-- whose in-flight key is returned.
function _M.release(ctx)
    if ctx.route then
        local key = ctx.inflight
        if key then
            ctx.inflight = nil
            take_one(key)
        end
    else
        return _M.decrement("gateway_inflight")
    end
end

function _M.inflight(route, ep)
    return load_of(ngx.shared[_M.DICT], route, ep)
end

-- balancer_by_lua: the peer access() chose; on a retry (the connect failed),
-- mark that endpoint failed and try another one of the same model.
function _M.balance()
    local b = require "ngx.balancer"
    local ctx = ngx.ctx
    local route, ep = ctx.route, ctx.endpoint
    if not route or not ep then
        return ngx.exit(500)
    end
    if ctx.tried then
        local metrics = require "gateway_metrics"
        metrics.upstream_failure(route, ep)
        health.failed(route, ep.id)
        ctx.tried[ep.id] = true
        -- No other usable pod (they failed meanwhile): the same one again, and nginx
        -- answers 502 when the tries run out.
        local other = _M.choose(route, ctx.request, ctx.tried)
        if other then
            _M.release(ctx)
            _M.acquire(route, other, ctx)
            ctx.endpoint, ep = other, other
        end
    else
        ctx.tried = {}
        -- Retries only onto other pods: as many as were usable when access() chose.
        local tries = math.min(route.balancing.maxTries, ctx.candidates or 1)
        if tries > 1 then
            b.set_more_tries(tries - 1)
        end
    end
    local ok, err = b.set_current_peer(ep.address, ep.port)
    if not ok then
        ngx.log(ngx.ERR, "cannot set the peer ", ep.id, " of model ", route.name, ": ", err)
        return ngx.exit(500)
    end
end

return _M

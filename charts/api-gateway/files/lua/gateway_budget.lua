-- Per-key budgets: requests per minute and tokens per minute, checked before a
-- request is admitted, tokens charged once its response has ended. Sliding
-- one-minute windows (the previous minute weighted by how much of it still
-- overlaps the last 60 s, plus the current one), counted in Redis when
-- usage.redis is set, so every gateway replica shares one budget, else in this
-- pod's shared dict. The decision is one function (decide), run by nginx for
-- the local counters and sent to Redis inside the admission script, so the
-- check and the count happen atomically there.
--
-- Tokens are known only at the end, so requests admitted together can go past
-- the token budget. To bound that: while the tokens already charged plus the
-- key's in-flight requests on this replica, at its average tokens per request
-- (before any is charged: this request's estimate, a quarter of its bytes plus
-- its max_tokens), would reach the limit, a replica admits a request of that
-- key only when it has none in flight. The overshoot is then at most one
-- request in flight per replica (of about the key's average size).
local ngx = ngx
local floor = math.floor
local ceil = math.ceil
local max = math.max
local tostring = tostring
local tonumber = tonumber

local _M = { WINDOW = 60, DICT = "gateway_ratelimit" }

local DECIDE = [[
local function decide(prev_r, cur_r, prev_t, cur_t, prev_c, cur_c, weight, rpm, tpm, inflight, estimate)
    local req_est = prev_r * weight + cur_r
    local tok_est = prev_t * weight + cur_t
    if rpm > 0 and req_est >= rpm then
        return false, "requests", req_est, tok_est
    end
    if tpm > 0 then
        if tok_est >= tpm then
            return false, "tokens", req_est, tok_est
        end
        local charged = prev_c * weight + cur_c
        local avg = charged > 0 and tok_est / charged or estimate
        if inflight > 0 and tok_est + (inflight + 1) * avg >= tpm then
            return false, "pace", req_est, tok_est
        end
    end
    return true, "", req_est, tok_est
end
]]
_M.decide = assert(loadstring(DECIDE .. " return decide"))()

-- KEYS: requests prev/cur, tokens prev/cur, charged requests prev/cur (one hash tag: one slot).
-- ARGV: weight, rpm, tpm, in flight on this replica, ttl, this request's token estimate.
_M.ADMIT_SCRIPT = DECIDE .. [[
local function n(k) return tonumber(redis.call("GET", k) or "0") or 0 end
local w, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ok, reason, req_est, tok_est = decide(n(KEYS[1]), n(KEYS[2]), n(KEYS[3]), n(KEYS[4]), n(KEYS[5]),
    n(KEYS[6]), w, rpm, tpm, tonumber(ARGV[4]), tonumber(ARGV[6]))
if ok and rpm > 0 then
    redis.call("INCR", KEYS[2])
    redis.call("EXPIRE", KEYS[2], ARGV[5])
end
return { ok and 1 or 0, reason, tostring(req_est), tostring(tok_est), tostring(n(KEYS[1])), tostring(n(KEYS[3])) }
]]

-- KEYS: tokens cur, charged requests cur. ARGV: tokens, ttl.
_M.CHARGE_SCRIPT = [[
redis.call("INCRBY", KEYS[1], ARGV[1])
redis.call("EXPIRE", KEYS[1], ARGV[2])
redis.call("INCR", KEYS[2])
redis.call("EXPIRE", KEYS[2], ARGV[2])
return 1
]]

local function keys_of(prefix, name, current)
    local tag = prefix .. "{" .. name .. "}:"
    return { tag .. "r:" .. (current - 1), tag .. "r:" .. current, tag .. "t:" .. (current - 1), tag .. "t:" .. current,
             tag .. "c:" .. (current - 1), tag .. "c:" .. current }
end
_M.keys_of = keys_of

-- Seconds until an estimate over `limit` decays below it (the previous minute's
-- share shrinks as the window slides), at most the rest of this minute.
local function retry_after(prev, cur, limit, elapsed)
    local wait = _M.WINDOW - elapsed
    if cur < limit and prev > 0 then
        wait = math.min(wait, (prev * (_M.WINDOW - elapsed) / _M.WINDOW + cur - limit + 1) * _M.WINDOW / prev)
    end
    return max(1, ceil(wait))
end

local function local_counts(dict, keys)
    local out = {}
    for i = 1, 6 do
        out[i] = dict:get(keys[i]) or 0
    end
    return out
end

-- The in-flight count of a key on this replica (all its workers).
local function inflight_key(name)
    return "f\0" .. name
end

local function release(dict, name)
    local left = dict:incr(inflight_key(name), -1, 0)
    if left and left <= 0 then
        dict:delete(inflight_key(name))
    end
end

-- Admission of one request of key (an entry of the keys file). settings:
-- config.budget ({ redis = {...} or nil, failMode, prefix }); estimate: this
-- request's expected tokens. Returns a result table { ok, reason,
-- requests_left, tokens_left, reset_requests, reset_tokens, retry_after } or
-- nil, err_message (the backend failed).
function _M.check(key, settings, now, estimate)
    estimate = estimate or 0
    local rpm, tpm = key.requests_per_minute or 0, key.tokens_per_minute or 0
    local window = _M.WINDOW
    local current = floor(now / window)
    local elapsed = now - current * window
    local weight = (window - elapsed) / window
    local dict = ngx.shared[_M.DICT]
    -- Counted in flight before the check, atomically: two workers of this pod deciding at once
    -- see different counts (the others in flight), so only one can take the last place.
    local inflight = 0
    if tpm > 0 then
        inflight = (dict:incr(inflight_key(key.name), 1, 0) or 1) - 1
    end
    local keys = keys_of(settings.prefix or "", key.name, current)
    local ok, reason, req_est, tok_est, prev_r, prev_t
    if settings.redis then
        local redis = require "gateway_redis"
        local reply, err = redis.eval(settings.redis, _M.ADMIT_SCRIPT, keys,
            { tostring(weight), rpm, tpm, inflight, window * 2, estimate })
        if not reply then
            if tpm > 0 then
                release(dict, key.name)
            end
            return nil, err
        end
        ok, reason = reply[1] == 1, reply[2]
        req_est, tok_est, prev_r, prev_t = tonumber(reply[3]), tonumber(reply[4]), tonumber(reply[5]),
            tonumber(reply[6])
    else
        local c = local_counts(dict, keys)
        prev_r, prev_t = c[1], c[3]
        ok, reason, req_est, tok_est = _M.decide(c[1], c[2], c[3], c[4], c[5], c[6], weight, rpm, tpm, inflight,
            estimate)
        if ok and rpm > 0 then
            dict:incr(keys[2], 1, 0, window * 2)
        end
    end
    local result = { ok = ok, reason = reason, reset_requests = max(1, ceil(window - elapsed)),
                     reset_tokens = max(1, ceil(window - elapsed)) }
    if rpm > 0 then
        result.requests_left = max(0, floor(rpm - req_est - (ok and 1 or 0)))
    end
    if tpm > 0 then
        result.tokens_left = max(0, floor(tpm - tok_est))
    end
    if reason == "requests" then
        result.retry_after = retry_after(prev_r, req_est - prev_r * weight, rpm, elapsed)
        result.reset_requests = result.retry_after
    elseif reason == "tokens" then
        result.retry_after = retry_after(prev_t, tok_est - prev_t * weight, tpm, elapsed)
        result.reset_tokens = result.retry_after
    elseif reason == "pace" then
        result.retry_after = 1
    end
    if not ok and tpm > 0 then
        release(dict, key.name)
    end
    return result
end

-- (Also when nginx stops, premature: the tokens still count.)
local function charge_redis(_, settings, keys, tokens, name)
    local redis = require "gateway_redis"
    local _, err = redis.eval(settings.redis, _M.CHARGE_SCRIPT, { keys[4], keys[6] }, { tokens, _M.WINDOW * 2 })
    if err then
        require("gateway_metrics").budget_backend_error()
        ngx.log(ngx.WARN, "budget: charging tokens to Redis failed (", err, "); they are lost")
    end
    -- In flight until its tokens count: a request admitted meanwhile sees either.
    release(ngx.shared[_M.DICT], name)
end

-- Log phase: the request of key `name` (with a token budget) ended having used
-- `tokens`: its tokens count in the window, then it leaves the in-flight count.
-- A log phase has no cosockets: Redis is written from a timer.
function _M.charge(name, tokens, settings, now)
    local dict = ngx.shared[_M.DICT]
    local current = floor(now / _M.WINDOW)
    local keys = keys_of(settings.prefix or "", name, current)
    if settings.redis then
        local ok, err = ngx.timer.at(0, charge_redis, settings, keys, tokens, name)
        if not ok then
            ngx.log(ngx.WARN, "budget: cannot charge tokens: ", err)
            release(dict, name)
        end
        return
    end
    dict:incr(keys[4], tokens, 0, _M.WINDOW * 2)
    dict:incr(keys[6], 1, 0, _M.WINDOW * 2)
    release(dict, name)
end

return _M

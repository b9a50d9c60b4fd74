-- Per-key request rate limits (requests per minute), shared by all workers
-- through a lua_shared_dict. Sliding-window estimate: the previous minute's
-- count weighted by how much of it still overlaps the last 60 seconds, plus
-- the current minute's count. Two reads and one increment per request.
local floor = math.floor
local ceil = math.ceil
local max = math.max
local min = math.min

local _M = { WINDOW = 60 }

-- Returns true, remaining, reset_seconds (until the window starts afresh); or
-- nil, 0, retry_after_seconds when over the limit.
function _M.check(dict, name, limit, now)
    local window = _M.WINDOW
    local current = floor(now / window)
    local elapsed = now - current * window
    local key = name .. "\0" .. current
    local previous = dict:get(name .. "\0" .. (current - 1)) or 0
    local count = dict:get(key) or 0
    local weight = (window - elapsed) / window
    local estimate = previous * weight + count
    if estimate >= limit then
        -- Seconds until the previous minute's share has decayed enough, or the
        -- current minute ends.
        local wait = window - elapsed
        if count < limit and previous > 0 then
            wait = min(wait, (estimate - limit + 1) * window / previous)
        end
        return nil, 0, max(1, ceil(wait))
    end
    local newcount = dict:incr(key, 1, 0, window * 2) or count + 1
    return true, max(0, floor(limit - previous * weight - newcount)), max(1, ceil(window - elapsed))
end

return _M

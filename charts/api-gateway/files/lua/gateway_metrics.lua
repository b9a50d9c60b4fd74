-- Prometheus metrics per model, kept in a lua_shared_dict so every worker
-- adds to the same counters: requests by status, request duration, time to the
-- first response byte, response bytes, and readiness from the health checks.
-- Only routed model names (never what a client typed) become label values.
local health = require "gateway_health"
local config = require "gateway_config"

local ngx = ngx
local concat = table.concat
local format = string.format
local find = string.find
local sub = string.sub
local gsub = string.gsub
local sort = table.sort
local tonumber = tonumber
local ipairs = ipairs
local pairs = pairs

local _M = { DICT = "gateway_metrics" }

local SEP = "\1"
_M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600 }
local BUCKETS = _M.BUCKETS
local NBUCKETS = #BUCKETS

local HISTOGRAMS = {
    d = { "gateway_request_duration_seconds", "Time from the first request byte to the last response byte." },
    f = { "gateway_time_to_first_byte_seconds", "Time from the first request byte to the first response body byte." },
}

local function bucket_of(value)
    for i = 1, NBUCKETS do
        if value <= BUCKETS[i] then
            return i
        end
    end
    return NBUCKETS + 1
end

local function observe(dict, kind, model, value)
    dict:incr(kind .. SEP .. model .. SEP .. bucket_of(value), 1, 0)
    dict:incr(kind .. "s" .. SEP .. model, value, 0)
end

-- body_filter: remembers when the first body byte went to the client.
function _M.first_byte()
    local var = ngx.var
    if var.gateway_ttfb == "" then
        var.gateway_ttfb = format("%.3f", ngx.now() - ngx.req.start_time())
    end
end

-- log phase: one request's counters.
function _M.log()
    local dict = ngx.shared[_M.DICT]
    local var = ngx.var
    local model = var.gateway_model
    dict:incr("r" .. SEP .. model .. SEP .. var.status, 1, 0)
    dict:incr("b" .. SEP .. model, tonumber(var.bytes_sent) or 0, 0)
    observe(dict, "d", model, tonumber(var.request_time) or 0)
    local ttfb = tonumber(var.gateway_ttfb)
    if ttfb then
        observe(dict, "f", model, ttfb)
    end
end

local function label(value)
    return (gsub(value, '[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function split(key)
    local parts, start = {}, 1
    while true do
        local i = find(key, SEP, start, true)
        if not i then
            parts[#parts + 1] = sub(key, start)
            return parts
        end
        parts[#parts + 1] = sub(key, start, i - 1)
        start = i + 1
    end
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys)
    return keys
end

-- The exposition text from the dict's keys (a pure function, for tests).
function _M.render(entries, ready_by_model)
    local requests, bytes, hist, sums = {}, {}, { d = {}, f = {} }, { d = {}, f = {} }
    for key, value in pairs(entries) do
        local p = split(key)
        local kind = p[1]
        if kind == "r" then
            requests[p[2] .. SEP .. p[3]] = value
        elseif kind == "b" then
            bytes[p[2]] = value
        elseif kind == "d" or kind == "f" then
            local per_model = hist[kind][p[2]] or {}
            hist[kind][p[2]] = per_model
            per_model[tonumber(p[3])] = value
        elseif kind == "ds" or kind == "fs" then
            sums[kind == "ds" and "d" or "f"][p[2]] = value
        end
    end
    local out = {
        "# HELP gateway_requests_total Requests answered, by routed model (empty: not routed) and status.",
        "# TYPE gateway_requests_total counter",
    }
    for _, k in ipairs(sorted_keys(requests)) do
        local p = split(k)
        out[#out + 1] = format('gateway_requests_total{model="%s",status="%s"} %d', label(p[1]), label(p[2]),
            requests[k])
    end
    out[#out + 1] = "# HELP gateway_response_bytes_total Bytes sent to clients, by routed model."
    out[#out + 1] = "# TYPE gateway_response_bytes_total counter"
    for _, model in ipairs(sorted_keys(bytes)) do
        out[#out + 1] = format('gateway_response_bytes_total{model="%s"} %d', label(model), bytes[model])
    end
    for _, kind in ipairs({ "d", "f" }) do
        local name = HISTOGRAMS[kind][1]
        out[#out + 1] = "# HELP " .. name .. " " .. HISTOGRAMS[kind][2]
        out[#out + 1] = "# TYPE " .. name .. " histogram"
        for _, model in ipairs(sorted_keys(hist[kind])) do
            local counts, cumulative, m = hist[kind][model], 0, label(model)
            for i = 1, NBUCKETS + 1 do
                cumulative = cumulative + (counts[i] or 0)
                local le = i <= NBUCKETS and format("%g", BUCKETS[i]) or "+Inf"
                out[#out + 1] = format('%s_bucket{model="%s",le="%s"} %d', name, m, le, cumulative)
            end
            out[#out + 1] = format('%s_sum{model="%s"} %.6f', name, m, sums[kind][model] or 0)
            out[#out + 1] = format('%s_count{model="%s"} %d', name, m, cumulative)
        end
    end
    out[#out + 1] = "# HELP gateway_model_ready Health check of the model: passes (1), fails (0), not run (-1)."
    out[#out + 1] = "# TYPE gateway_model_ready gauge"
    for _, model in ipairs(sorted_keys(ready_by_model)) do
        local r = ready_by_model[model]
        local value = r == true and 1 or r == false and 0 or -1
        out[#out + 1] = format('gateway_model_ready{model="%s"} %d', label(model), value)
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

-- GET /metrics on the metrics port.
function _M.collect()
    local dict = ngx.shared[_M.DICT]
    local entries = {}
    for _, key in ipairs(dict:get_keys(0)) do
        entries[key] = dict:get(key)
    end
    local ready = {}
    for _, route in ipairs(config.routes or {}) do
        local r = health.ready(route.name)
        if r == nil then
            r = "unknown"
        end
        ready[route.name] = r
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(_M.render(entries, ready))
end

return _M

-- Prometheus metrics, kept in a lua_shared_dict so every worker adds to the
-- same counters: requests by model and status, durations, time to the first
-- response byte, response bytes; per endpoint (pod) of a model: proxied
-- requests by status, failed connects, in-flight requests; the balancer's
-- decisions; and each model's readiness and ready replicas. Only routed model
-- names and discovered endpoints (never what a client typed) become labels.
local health = require "gateway_health"
local config = require "gateway_config"
local balancer = require "gateway_balancer"

local ngx = ngx
local concat = table.concat
local format = string.format
local find = string.find
local match = string.match
local sub = string.sub
local gsub = string.gsub
local sort = table.sort
local tonumber = tonumber
local ipairs = ipairs
local pairs = pairs

local _M = { DICT = "gateway_metrics", GONE_SECONDS = 300 }

local SEP = "\1"
_M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600 }
local BUCKETS = _M.BUCKETS
local NBUCKETS = #BUCKETS

-- Counters: dict key kind -> name, help, label names (the key holds the values in this order).
local COUNTERS = {
    { "r", "gateway_requests_total", "Requests answered, by routed model (empty: not routed) and status.",
      { "model", "status" } },
    { "b", "gateway_response_bytes_total", "Bytes sent to clients, by routed model.", { "model" } },
    { "e", "gateway_upstream_requests_total",
      "Requests proxied to each endpoint (pod address:port) of a model, by the status it answered.",
      { "model", "endpoint", "status" } },
    { "x", "gateway_upstream_failures_total",
      "Failed connects to an endpoint of a model (the request went to another pod, or got 502/503).",
      { "model", "endpoint" } },
    { "c", "gateway_balancer_decisions_total",
      "Endpoint choices: affinity (the key's own pod), spill (its pod was over the load bound), failover "
      .. "(its pod was unusable), no_key (no session or prefix key: least-request), pick (least-request, "
      .. "round-robin), single (one usable pod).", { "model", "decision" } },
}
-- Kinds whose second label is an endpoint: pruned once the endpoint is gone a while.
local PER_ENDPOINT = { e = true, x = true }

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
    local status = var.status
    dict:incr("r" .. SEP .. model .. SEP .. status, 1, 0)
    dict:incr("b" .. SEP .. model, tonumber(var.bytes_sent) or 0, 0)
    observe(dict, "d", model, tonumber(var.request_time) or 0)
    local ttfb = tonumber(var.gateway_ttfb)
    if ttfb then
        observe(dict, "f", model, ttfb)
    end
    local ep = var.gateway_endpoint
    if ep and ep ~= "" then
        -- The status of the last attempt ($upstream_status lists every attempt).
        local upstream = match(var.upstream_status or "", "(%d%d%d)%s*$") or "none"
        dict:incr("e" .. SEP .. model .. SEP .. ep .. SEP .. upstream, 1, 0)
    end
end

function _M.decision(route, decision)
    ngx.shared[_M.DICT]:incr("c" .. SEP .. route.name .. SEP .. decision, 1, 0)
end

function _M.upstream_failure(route, ep)
    ngx.shared[_M.DICT]:incr("x" .. SEP .. route.name .. SEP .. ep.id, 1, 0)
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

local function labels(names, values)
    local out = {}
    for i, name in ipairs(names) do
        out[i] = name .. '="' .. label(values[i] or "") .. '"'
    end
    return "{" .. concat(out, ",") .. "}"
end

-- The exposition text (a pure function, for tests). entries: the metrics
-- dict's keys and values. models: name -> { ready = true/false/nil,
-- replicas = { ready, total }, inflight = { endpoint -> n } }.
function _M.render(entries, models)
    local counters, hist, sums = {}, { d = {}, f = {} }, { d = {}, f = {} }
    for key, value in pairs(entries) do
        local p = split(key)
        local kind = p[1]
        if kind == "d" or kind == "f" then
            local per_model = hist[kind][p[2]] or {}
            hist[kind][p[2]] = per_model
            per_model[tonumber(p[3])] = value
        elseif kind == "ds" or kind == "fs" then
            sums[sub(kind, 1, 1)][p[2]] = value
        elseif kind ~= "g" then
            local family = counters[kind] or {}
            counters[kind] = family
            family[sub(key, #kind + 2)] = value
        end
    end
    local out = {}
    for _, c in ipairs(COUNTERS) do
        local kind, name, help, names = c[1], c[2], c[3], c[4]
        out[#out + 1] = "# HELP " .. name .. " " .. help
        out[#out + 1] = "# TYPE " .. name .. " counter"
        local family = counters[kind] or {}
        for _, k in ipairs(sorted_keys(family)) do
            out[#out + 1] = format("%s%s %d", name, labels(names, split(k)), family[k])
        end
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
    local names = sorted_keys(models)
    out[#out + 1] = "# HELP gateway_model_ready Whether the model has a usable endpoint: yes (1), no (0), "
        .. "not discovered yet (-1)."
    out[#out + 1] = "# TYPE gateway_model_ready gauge"
    for _, model in ipairs(names) do
        local r = models[model].ready
        out[#out + 1] = format('gateway_model_ready{model="%s"} %d', label(model),
            r == true and 1 or r == false and 0 or -1)
    end
    out[#out + 1] = "# HELP gateway_model_replicas Endpoints (pods) of the model: discovered (total), and usable "
        .. "(ready: listed by discovery and passing the gateway's health checks)."
    out[#out + 1] = "# TYPE gateway_model_replicas gauge"
    for _, model in ipairs(names) do
        local r = models[model].replicas or {}
        out[#out + 1] = format('gateway_model_replicas{model="%s",state="ready"} %d', label(model), r[1] or 0)
        out[#out + 1] = format('gateway_model_replicas{model="%s",state="total"} %d', label(model), r[2] or 0)
    end
    out[#out + 1] = "# HELP gateway_upstream_in_flight Requests in flight to each endpoint of a model, on this "
        .. "gateway pod."
    out[#out + 1] = "# TYPE gateway_upstream_in_flight gauge"
    for _, model in ipairs(names) do
        local inflight = models[model].inflight or {}
        for _, ep in ipairs(sorted_keys(inflight)) do
            out[#out + 1] = format('gateway_upstream_in_flight{model="%s",endpoint="%s"} %d', label(model),
                label(ep), inflight[ep])
        end
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

-- Drops the per-endpoint counters of endpoints gone for GONE_SECONDS (pods come
-- and go: their series must not pile up), and returns what is left.
local function prune(dict, live, now)
    local entries = {}
    for _, key in ipairs(dict:get_keys(0)) do
        local value = dict:get(key)
        local kind = match(key, "^(%w+)" .. SEP)
        if PER_ENDPOINT[kind] and value then
            local p = split(key)
            local model, ep = p[2], p[3]
            local marker = "g" .. SEP .. model .. SEP .. ep
            if live[model] and live[model][ep] then
                dict:delete(marker)
            else
                local since = dict:get(marker)
                if not since then
                    dict:set(marker, now)
                elseif now - since > _M.GONE_SECONDS then
                    dict:delete(key)
                    value = nil
                end
            end
        end
        if value then
            entries[key] = value
        end
    end
    return entries
end

-- GET /metrics on the metrics port.
function _M.collect()
    local dict = ngx.shared[_M.DICT]
    local models, live = {}, {}
    for _, route in ipairs(config.routes or {}) do
        local state, ready, total = health.summary(route)
        local list = health.endpoints(route)
        local inflight, ids = {}, {}
        for _, ep in ipairs(list) do
            ids[ep.id] = true
            inflight[ep.id] = balancer.inflight(route, ep)
        end
        live[route.name] = ids
        local is_ready -- nil until discovery has run
        if state ~= "unknown" then
            is_ready = state == "ready"
        end
        models[route.name] = { ready = is_ready, replicas = { ready, total }, inflight = inflight }
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(_M.render(prune(dict, live, ngx.now()), models))
end

return _M

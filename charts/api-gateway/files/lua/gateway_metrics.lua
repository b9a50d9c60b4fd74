-- Prometheus metrics, kept in a lua_shared_dict so every worker adds to the
-- same counters. Each worker sums its own in a Lua table and adds them to the
-- dict every FLUSH_SECONDS (one dict update per series and flush instead of ~20
-- per request; /metrics lags by at most that). Counted: requests by model and
-- status, durations, time to the first response byte, response bytes; per
-- endpoint (pod) of a model: proxied requests by status, failed connects; the
-- balancer's decisions. Read when /metrics is: in-flight requests per pod and
-- each model's readiness and ready replicas. Only routed model names and
-- discovered endpoints (never what a client typed) become labels.
local health = require "gateway_health"
local config = require "gateway_config"
local balancer = require "gateway_balancer"
local hold = require "gateway_hold"
local cjson = require "cjson.safe"

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

local _M = { DICT = "gateway_metrics", GONE_SECONDS = 300, FLUSH_SECONDS = 1 }

local SEP = "\1"
_M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600 }
-- The OpenTelemetry GenAI semantic conventions' advice for these histograms.
local TOKEN_BUCKETS = { 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304 }
local TTFT_BUCKETS = { 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10 }
local TPOT_BUCKETS = { 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5 }

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
    { "k", "gateway_tokens_total", "Tokens of answered requests, from the response's usage: input (prompt) and "
      .. "output (completion), by model and API key name.", { "model", "api_key", "type" } },
    { "u", "gateway_usage_missing_total", "Successful answers that carried no usage (streams without "
      .. "stream_options.include_usage): counted here, never as zero tokens.", { "model", "kind" } },
    { "j", "gateway_budget_rejections_total", "Requests refused by a key's budget: requests (per minute), "
      .. "tokens (per minute), pace (near the token budget, one request at a time per replica).",
      { "api_key", "reason" } },
    { "q", "gateway_budget_backend_errors_total", "Failed calls to the budget backend (Redis).", {} },
    { "w", "gateway_hold_total", "Requests held while their model had no ready pod, by how the wait ended: "
      .. "routed (a pod came), timeout, gone (the client hung up), full (too many waiting).", { "model", "outcome" } },
}
-- Kinds whose second label is an endpoint: pruned once the endpoint is gone a while.
local PER_ENDPOINT = { e = true, x = true }

-- Histograms: dict key kind -> name, help, buckets, label names.
local HISTOGRAMS = {
    { "d", "gateway_request_duration_seconds", "Time from the first request byte to the last response byte.",
      _M.BUCKETS, { "model" } },
    { "f", "gateway_time_to_first_byte_seconds", "Time from the first request byte to the first response body byte.",
      _M.BUCKETS, { "model" } },
    { "g", "gen_ai_client_token_usage", "Tokens per request (OpenTelemetry GenAI: gen_ai.client.token.usage), by "
      .. "model and gen_ai.token.type (input, output).", TOKEN_BUCKETS,
      { "gen_ai_request_model", "gen_ai_token_type" } },
    { "h", "gen_ai_server_time_to_first_token_seconds", "Time to the first content token of a stream "
      .. "(OpenTelemetry GenAI: gen_ai.server.time_to_first_token).", TTFT_BUCKETS, { "gen_ai_request_model" } },
    { "p", "gen_ai_server_time_per_output_token_seconds", "Time per output token after the first, of streams "
      .. "(OpenTelemetry GenAI: gen_ai.server.time_per_output_token).", TPOT_BUCKETS, { "gen_ai_request_model" } },
}
local HIST = {}
for _, h in ipairs(HISTOGRAMS) do
    HIST[h[1]] = h
    HIST[h[1] .. "s"] = h
end

local function bucket_of(buckets, value)
    for i = 1, #buckets do
        if value <= buckets[i] then
            return i
        end
    end
    return #buckets + 1
end

-- This worker's counts since its last flush: dict key -> amount.
local pending = {}

local function add(key, value)
    pending[key] = (pending[key] or 0) + value
end

-- Adds this worker's counts to the shared dict (the timer, /metrics, worker exit).
function _M.flush()
    local batch = pending
    pending = {}
    local dict = ngx.shared[_M.DICT]
    local lost, why = 0, nil
    for key, value in pairs(batch) do
        local ok, err = dict:incr(key, value, 0)
        if not ok then
            lost, why = lost + 1, err
        end
    end
    if lost > 0 then
        ngx.log(ngx.ERR, "metrics: ", lost, " series not counted (", why, "); raise metrics.dictSize")
    end
end

-- init_worker: every worker flushes its counts on a timer (and once more when it exits).
function _M.start()
    local ok, err = ngx.timer.every(_M.FLUSH_SECONDS, _M.flush)
    if not ok then
        ngx.log(ngx.ERR, "metrics: cannot start the flush timer: ", err)
    end
end

-- One observation of histogram `kind` with label values joined by SEP.
local function observe(kind, labels, value)
    add(kind .. SEP .. labels .. SEP .. bucket_of(HIST[kind][4], value), 1)
    add(kind .. "s" .. SEP .. labels, value)
end

-- body_filter, on the first body chunk: when the first body byte went to the
-- client (ctx.ttfb for log(), $gateway_ttfb for the access log).
function _M.first_byte(ctx)
    local ttfb = ngx.now() - ngx.req.start_time()
    ctx.ttfb = ttfb
    ngx.var.gateway_ttfb = format("%.3f", ttfb)
end

-- log phase: one request's counters. The routed location's log (gateway_router)
-- passes the model and status it has read, the time to the first byte, the
-- endpoint (pod) the request went to and, when it knows it, the status that
-- pod answered.
function _M.log(model, status, ttfb, ep, upstream)
    local var = ngx.var
    model = model or var.gateway_model
    add("r" .. SEP .. model .. SEP .. (status or ngx.status), 1)
    add("b" .. SEP .. model, tonumber(var.bytes_sent) or 0)
    observe("d", model, ngx.now() - ngx.req.start_time())
    if ttfb then
        observe("f", model, ttfb)
    end
    if ep then
        -- The status of the last attempt ($upstream_status lists every attempt).
        upstream = upstream or match(var.upstream_status or "", "(%d%d%d)%s*$") or "none"
        add("e" .. SEP .. model .. SEP .. ep .. SEP .. upstream, 1)
    end
end

function _M.decision(route, decision)
    add("c" .. SEP .. route.name .. SEP .. decision, 1)
end

function _M.upstream_failure(route, ep)
    add("x" .. SEP .. route.name .. SEP .. ep.id, 1)
end

-- The usage of one answered request: tokens per type (nil: the answer had none),
-- time to first token and per output token (streams).
function _M.usage(model, key_name, stream, prompt, completion, ttft, tpot)
    if prompt then
        local k = "k" .. SEP .. model .. SEP .. key_name .. SEP
        add(k .. "input", prompt)
        add(k .. "output", completion)
        observe("g", model .. SEP .. "input", prompt)
        observe("g", model .. SEP .. "output", completion)
    else
        add("u" .. SEP .. model .. SEP .. (stream and "stream" or "response"), 1)
    end
    if ttft then
        observe("h", model, ttft)
    end
    if tpot then
        observe("p", model, tpot)
    end
end

function _M.held(route, outcome)
    add("w" .. SEP .. route.name .. SEP .. outcome, 1)
end

function _M.budget_rejection(key_name, reason)
    add("j" .. SEP .. key_name .. SEP .. reason, 1)
end

function _M.budget_backend_error()
    add("q", 1)
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
    return #out > 0 and "{" .. concat(out, ",") .. "}" or ""
end

-- The exposition text (a pure function, for tests). entries: the metrics
-- dict's keys and values. models: name -> { ready = true/false/nil,
-- replicas = { ready, total }, inflight = { endpoint -> n } }.
function _M.render(entries, models)
    local counters, hist, sums = {}, {}, {}
    for key, value in pairs(entries) do
        local kind = match(key, "^([^" .. SEP .. "]+)")
        local h = HIST[kind]
        if h and kind == h[1] then
            -- kind SEP labels... SEP bucket
            local rest = sub(key, #kind + 2)
            local cut = rest:match("^.*()" .. SEP)
            local series, bucket = sub(rest, 1, cut - 1), tonumber(sub(rest, cut + 1))
            hist[kind] = hist[kind] or {}
            hist[kind][series] = hist[kind][series] or {}
            hist[kind][series][bucket] = value
        elseif h then
            sums[h[1]] = sums[h[1]] or {}
            sums[h[1]][sub(key, #kind + 2)] = value
        elseif kind ~= "z" and kind ~= nil then -- z: prune()'s gone markers
            local family = counters[kind] or {}
            counters[kind] = family
            family[#key > #kind and sub(key, #kind + 2) or ""] = value
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
    for _, h in ipairs(HISTOGRAMS) do
        local kind, name, help, buckets, names = h[1], h[2], h[3], h[4], h[5]
        out[#out + 1] = "# HELP " .. name .. " " .. help
        out[#out + 1] = "# TYPE " .. name .. " histogram"
        local series = hist[kind] or {}
        for _, s in ipairs(sorted_keys(series)) do
            local counts, cumulative = series[s], 0
            local lv = labels(names, split(s))
            local open = sub(lv, 1, -2) .. ","
            for i = 1, #buckets + 1 do
                cumulative = cumulative + (counts[i] or 0)
                local le = i <= #buckets and format("%g", buckets[i]) or "+Inf"
                out[#out + 1] = format('%s_bucket%sle="%s"} %d', name, open, le, cumulative)
            end
            out[#out + 1] = format("%s_sum%s %.6f", name, lv, (sums[kind] or {})[s] or 0)
            out[#out + 1] = format("%s_count%s %d", name, lv, cumulative)
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
    out[#out + 1] = "# HELP gateway_requests_held Requests waiting on this gateway pod for their model to get a "
        .. "ready pod (hold.timeoutSeconds)."
    out[#out + 1] = "# TYPE gateway_requests_held gauge"
    for _, model in ipairs(names) do
        out[#out + 1] = format('gateway_requests_held{model="%s"} %d', label(model), models[model].held or 0)
    end
    out[#out + 1] = "# HELP gateway_model_demand Requests of the model on this gateway pod: held plus in flight "
        .. "(what a scaler reads to wake a model from zero)."
    out[#out + 1] = "# TYPE gateway_model_demand gauge"
    for _, model in ipairs(names) do
        local m = models[model]
        local demand = m.held or 0
        for _, n in pairs(m.inflight or {}) do
            demand = demand + n
        end
        out[#out + 1] = format('gateway_model_demand{model="%s"} %d', label(model), demand)
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
            local marker = "z" .. SEP .. model .. SEP .. ep
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

-- Each model's state on this gateway pod (readiness, replicas, in flight per
-- pod, held), and the endpoints live now per model name (adapters included).
local function snapshot()
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
        for _, adapter in ipairs(route.adapters or {}) do -- requests for an adapter count under its name
            live[adapter.name] = ids
        end
        local is_ready -- nil until discovery has run
        if state ~= "unknown" then
            is_ready = state == "ready"
        end
        models[route.name] = { ready = is_ready, replicas = { ready, total }, inflight = inflight,
                               held = hold.held(route) }
    end
    return models, live
end

-- GET /metrics on the metrics port.
function _M.collect()
    _M.flush()
    local models, live = snapshot()
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(_M.render(prune(ngx.shared[_M.DICT], live, ngx.now()), models))
end

-- GET /demand?model=NAME on the metrics port: {"model", "held", "in_flight", "demand"} of one
-- model on this gateway pod, as JSON (what KEDA's metrics-api scaler reads, valueLocation
-- "demand"); without `model`, every model under "models". 404 for a model not routed.
function _M.demand()
    local models = snapshot()
    local function one(name)
        local m = models[name]
        local inflight = 0
        for _, n in pairs(m.inflight) do
            inflight = inflight + n
        end
        return { model = name, held = m.held, in_flight = inflight, demand = m.held + inflight }
    end
    local want = ngx.var.arg_model
    ngx.header["Content-Type"] = "application/json"
    if want and want ~= "" then
        want = ngx.unescape_uri(want)
        if not models[want] then
            ngx.status = 404
            ngx.print(cjson.encode({ error = { message = "No routed model is named \"" .. want
                .. "\" (use the catalog's modelName).", code = "model_not_found" } }), "\n")
            return
        end
        ngx.print(cjson.encode(one(want)), "\n")
        return
    end
    local all = {}
    for name in pairs(models) do
        all[name] = one(name)
    end
    ngx.print(cjson.encode({ models = all }), "\n")
end

return _M

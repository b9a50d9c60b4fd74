-- Configuration, loaded once in init_by_lua (the master process) from the files
-- the chart renders: routes.json (the routing table from the model catalog:
-- names, how to discover each model's pods, its balancing policy) and
-- gateway.json (settings), plus the API keys file when auth is on. Workers
-- inherit the loaded tables. Any problem stops nginx at start with a message;
-- what exists in the cluster does not matter here (pods are found at run time).
local cjson = require "cjson.safe"

local ngx = ngx
local io_open = io.open
local ipairs = ipairs
local pairs = pairs
local lower = string.lower
local match = string.match
local tonumber = tonumber
local tostring = tostring
local type = type
local decode = cjson.decode
local error = error

local _M = { loaded = false }

local UNITS = { [""] = 1, k = 1024, m = 1024 * 1024, g = 1024 * 1024 * 1024 }

-- nginx size syntax ("64m", "512k", "1048576") to bytes; nil when malformed.
function _M.parse_size(text)
    local number, unit = match(lower(tostring(text or "")), "^(%d+)([kmg]?)$")
    if not number then
        return nil
    end
    return tonumber(number) * UNITS[unit]
end

function _M.read_json(path)
    local file, err = io_open(path, "rb")
    if not file then
        return nil, "cannot open " .. path .. ": " .. (err or "?")
    end
    local text = file:read("*a")
    file:close()
    local value, derr = decode(text)
    if value == nil then
        return nil, path .. " is not valid JSON: " .. (derr or "?")
    end
    return value, nil, text
end

local POLICIES = { ["least-request"] = true, ["round-robin"] = true, session = true, prefix = true }

-- Checks one route and adds what the request path reads precomputed: the
-- shared-dict keys, the header variable of the session key, the health path.
function _M.prepare_route(route, i)
    local where = "routes[" .. i .. "] (" .. tostring(route.name) .. ")"
    if type(route.name) ~= "string" or type(route.host) ~= "string" then
        return nil, where .. " needs a name and a host"
    end
    local d = route.discovery
    if type(d) ~= "table" or not (type(d.srv) == "string" or (type(d.servers) == "table" and #d.servers > 0)) then
        return nil, where .. ": discovery needs an srv name or a list of servers"
    end
    for _, server in ipairs(d.servers or {}) do
        if type(server.host) ~= "string" or type(server.port) ~= "number" then
            return nil, where .. ": every discovery server needs a host and a port"
        end
    end
    local b = route.balancing or {}
    if not POLICIES[b.policy] then
        return nil, where .. ": balancing.policy must be least-request, round-robin, session or prefix, not "
            .. tostring(b.policy)
    end
    b.loadFactor = tonumber(b.loadFactor) or 0
    b.warmLoadFactor = tonumber(b.warmLoadFactor) or b.loadFactor
    b.warmSeconds = tonumber(b.warmSeconds) or 0
    b.prefixLength = tonumber(b.prefixLength) or 2048
    b.maxTries = tonumber(b.maxTries) or 3
    if b.sessionHeader and b.sessionHeader ~= "" then
        b.header_var = "http_" .. lower(b.sessionHeader):gsub("-", "_")
    end
    route.balancing = b
    -- LoRA adapters served on this model's pods: name -> source (the `root` /v1/models lists).
    route.adapter_source = {}
    for j, a in ipairs(route.adapters or {}) do
        if type(a) ~= "table" or type(a.name) ~= "string" or a.name == "" or type(a.source) ~= "string" then
            return nil, where .. ": adapters[" .. j .. "] needs a name and a source"
        end
        route.adapter_source[a.name] = a.source
    end
    route.adapters = route.adapters or {}
    local h = route.hold or {}
    route.hold = { timeoutSeconds = tonumber(h.timeoutSeconds) or 0, maxRequests = tonumber(h.maxRequests) or 100 }
    route.health_path = route.healthPath or "/health"
    route.version_key = "ver\0" .. route.name
    route.endpoints_key = "eps\0" .. route.name
    return route
end

-- name, alias and adapter name -> route (an adapter's requests go to its
-- model's pods); returns the lookup table, or nil, err.
function _M.index_routes(routes)
    local by_name = {}
    for i, route in ipairs(routes) do
        local ok, err = _M.prepare_route(route, i)
        if not ok then
            return nil, err
        end
        local names = { route.name }
        for _, alias in ipairs(route.aliases or {}) do
            names[#names + 1] = alias
        end
        for _, adapter in ipairs(route.adapters) do
            names[#names + 1] = adapter.name
        end
        for _, name in ipairs(names) do
            if by_name[name] then
                return nil, "model name or alias \"" .. name .. "\" is used twice"
            end
            by_name[name] = route
        end
    end
    return by_name
end

-- The route of a requested name and the model it names: the route's own name
-- for the name or an alias, the adapter's name for an adapter (a model of its
-- own for clients and API keys, served by its route's pods); nil when unknown.
function _M.lookup(name, by_name)
    local route = (by_name or _M.by_name)[name]
    if not route then
        return nil
    end
    return route, route.adapter_source[name] and name or route.name
end

-- Validates the API keys file's entries and prepares them for lookups: the key
-- itself is kept only as a SHA-1 digest (compared in constant time). Messages
-- name entries by position and name, never by key.
function _M.load_keys(entries, by_name, digest)
    if type(entries) ~= "table" or #entries == 0 then
        return nil, "the API keys file must hold a non-empty JSON list"
    end
    local keys, names, digests = {}, {}, {}
    for i, entry in ipairs(entries) do
        local where = "API key #" .. i
        if type(entry) ~= "table" then
            return nil, where .. " is not an object"
        end
        if type(entry.name) ~= "string" or entry.name == "" then
            return nil, where .. " needs a \"name\""
        end
        where = where .. " (" .. entry.name .. ")"
        if names[entry.name] then
            return nil, where .. " has the same name as " .. names[entry.name]
                .. ": names label the logs and share one rate-limit counter, so each must be unique"
        end
        names[entry.name] = where
        if type(entry.key) ~= "string" or #entry.key < 16 then
            return nil, where .. " needs a \"key\" of at least 16 characters"
        end
        if match(entry.key, "[%s%c]") then
            return nil, where .. ": the key holds whitespace or a control character (a bearer token cannot)"
        end
        local d = digest(entry.key)
        if digests[d] then
            return nil, where .. " has the same key as " .. digests[d] .. "; give each entry its own key"
        end
        digests[d] = where
        local rpm, tpm = entry.requestsPerMinute, entry.tokensPerMinute
        if rpm ~= nil and (type(rpm) ~= "number" or rpm < 0) then
            return nil, where .. ": requestsPerMinute must be a number >= 0"
        end
        if tpm ~= nil and (type(tpm) ~= "number" or tpm < 0) then
            return nil, where .. ": tokensPerMinute must be a number >= 0"
        end
        local models = entry.models or { "*" }
        if type(models) ~= "table" then
            return nil, where .. ": models must be a list"
        end
        local allowed, all = {}, false
        for _, name in ipairs(models) do
            if name == "*" then
                all = true
            elseif by_name[name] then
                local _, model = _M.lookup(name, by_name)
                allowed[model] = true
            else
                ngx.log(ngx.WARN, where, ": model \"", name, "\" is not in the routing table; ignored")
            end
        end
        local default_route
        if entry.defaultModel ~= nil then
            default_route = type(entry.defaultModel) == "string" and by_name[entry.defaultModel]
            if not default_route then
                return nil, where .. ": defaultModel " .. tostring(entry.defaultModel) .. " is not a routed model"
            end
            if default_route.adapter_source[entry.defaultModel] then
                return nil, where .. ": defaultModel " .. entry.defaultModel .. " is a LoRA adapter of "
                    .. default_route.name .. "; a request without \"model\" would get the base model, so name a "
                    .. "model (clients send an adapter's name as \"model\")"
            end
            if not all and not allowed[default_route.name] then
                return nil, where .. ": defaultModel " .. entry.defaultModel .. " is not one of its models"
            end
        end
        keys[i] = { name = entry.name, digest = d, all = all, models = allowed, default_route = default_route,
                    requests_per_minute = (rpm and rpm > 0) and rpm or nil,
                    tokens_per_minute = (tpm and tpm > 0) and tpm or nil }
    end
    return keys
end

-- Loads everything from config_dir; raises (stopping nginx) on any problem.
function _M.init(config_dir)
    local settings, err = _M.read_json(config_dir .. "/gateway.json")
    if not settings then
        error("api-gateway: " .. err, 0)
    end
    local table_, rerr, routes_text = _M.read_json(config_dir .. "/routes.json")
    if not table_ then
        error("api-gateway: " .. rerr, 0)
    end
    local routes = table_.routes or {}
    local by_name, ierr = _M.index_routes(routes)
    if not by_name then
        error("api-gateway: routes.json: " .. ierr, 0)
    end
    local default
    if type(table_.defaultModel) == "string" and table_.defaultModel ~= "" then
        default = by_name[table_.defaultModel]
        if not default or default.adapter_source[table_.defaultModel] then
            error("api-gateway: defaultModel \"" .. table_.defaultModel .. "\" is not a routed model (a name or "
                .. "alias; not a LoRA adapter)", 0)
        end
    end
    local max_body = _M.parse_size(settings.body and settings.body.maxSize)
    if not max_body then
        error("api-gateway: gateway.json: body.maxSize is not an nginx size", 0)
    end

    local auth = settings.auth or {}
    local keys
    if auth.enabled then
        local entries, kerr = _M.read_json(auth.keysFile)
        if not entries then
            error("api-gateway: API keys: " .. kerr, 0)
        end
        keys, kerr = _M.load_keys(entries, by_name, ngx.sha1_bin)
        if not keys then
            error("api-gateway: API keys file " .. auth.keysFile .. ": " .. kerr, 0)
        end
    end

    -- Lower-cased names -> the model they name, for the "did you mean" of a 404.
    local by_lower = {}
    for name in pairs(by_name) do
        local _, model = _M.lookup(name, by_name)
        by_lower[lower(name)] = by_lower[lower(name)] or model
    end

    -- Budgets: in Redis when an address is set (its password from the mounted Secret).
    local budgets = settings.budgets or {}
    local redis
    if type(budgets.redis) == "table" and budgets.redis.host then
        redis = { host = budgets.redis.host, port = budgets.redis.port, database = budgets.redis.database,
                  timeoutMs = budgets.redis.timeoutMs, pool = "gateway-budget" }
        if budgets.redis.passwordFile then
            local file = io_open(budgets.redis.passwordFile, "rb")
            if not file then
                error("api-gateway: budgets.redis.passwordSecret: cannot read " .. budgets.redis.passwordFile, 0)
            end
            redis.password = match(file:read("*a"), "^%s*(.-)%s*$")
            file:close()
        end
    end
    _M.budget = { redis = redis, failMode = budgets.failMode or "open", prefix = budgets.keyPrefix or "" }
    _M.usage_enabled = not (settings.usage and settings.usage.enabled == false)

    _M.settings = settings
    _M.routes = routes
    _M.by_name = by_name
    _M.by_lower = by_lower
    -- CORS: the allowed origins as a set ("*" allows any), the headers a preflight may ask for.
    local cors = settings.cors or {}
    local origins
    for _, origin in ipairs(cors.allowedOrigins or {}) do
        origins = origins or {}
        origins[origin] = true
    end
    _M.cors = { origins = origins, any = origins and origins["*"] or false,
                headers = table.concat(cors.allowedHeaders or {}, ", "), maxAgeSeconds = cors.maxAgeSeconds or 600 }
    _M.default_route = default
    _M.max_body = max_body
    _M.auth_enabled = auth.enabled and true or false
    _M.keys = keys
    _M.health = settings.healthCheck or {}
    _M.discovery = settings.discovery or {}
    _M.endpoints = settings.endpoints or {}
    _M.served = {}
    for _, path in ipairs(_M.endpoints) do
        _M.served[path] = true
    end
    -- The body fields that hold a session key (one scan serves every route).
    local session_fields, needs_dns = nil, false
    for _, route in ipairs(routes) do
        local field = route.balancing.sessionField
        if route.balancing.policy == "session" and field and field ~= "" then
            session_fields = session_fields or {}
            session_fields[field] = true
        end
        if route.discovery.srv then
            needs_dns = true
        end
        for _, server in ipairs(route.discovery.servers or {}) do
            needs_dns = needs_dns or not match(server.host, "^%d+%.%d+%.%d+%.%d+$")
        end
    end
    _M.session_fields = session_fields
    _M.needs_dns = needs_dns
    -- What gateway_reload compares the mounted file with.
    _M.routes_file = config_dir .. "/routes.json"
    _M.routes_text = routes_text
    _M.reload = settings.reload or {}
    _M.created = ngx.time()
    _M.loaded = true
    return _M
end

return _M

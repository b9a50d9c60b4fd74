local stub = require "ngx_stub"

local ROUTES = {
    { name = "a", aliases = { "org/A" }, upstream = "gateway-model-a", host = "svc-a.ns.svc.cluster.local" },
    { name = "b", aliases = {}, upstream = "gateway-model-b", host = "svc-b.ns.svc.cluster.local" },
}

-- A router over a loaded config, with the request described by opts.
local function setup(opts, settings)
    opts.var = opts.var or {}
    opts.var.uri = opts.var.uri or "/v1/chat/completions"
    local fake = stub.reset(opts)
    local config = require "gateway_config"
    config.routes = ROUTES
    config.by_name = assert(config.index_routes(ROUTES))
    config.default_route = ROUTES[1]
    config.max_body = 1024
    config.auth_enabled = false
    config.health = { enabled = true, intervalSeconds = 5 }
    config.loaded = true
    for k, v in pairs(settings or {}) do
        config[k] = v
    end
    return fake, require "gateway_router"
end

local function error_of(fake)
    return fake.status, stub.sent_json(fake).error
end

describe("gateway_router.access", function()
    it("routes by the body's model and sets the nginx variables", function()
        local fake, router = setup({ body = '{"model":"org/A","messages":[]}' })
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("a", fake.var.gateway_model)
        assert.equal("gateway-model-a", fake.var.gateway_upstream)
        assert.equal("svc-a.ns.svc.cluster.local", fake.var.gateway_upstream_host)
        assert.equal("org/A", fake.var.gateway_requested_model)
    end)

    it("uses the default model when the body has none", function()
        local fake, router = setup({ body = '{"messages":[]}' })
        router.access()
        assert.equal("a", fake.var.gateway_model)
    end)

    it("answers 400 without a model when there is no default", function()
        local fake, router = setup({ body = '{"messages":[]}' }, { default_route = false })
        router.access()
        local status, err = error_of(fake)
        assert.equal(400, status)
        assert.equal("model_required", err.code)
    end)

    it("answers 404 model_not_found for an unknown model, pointing at /v1/models", function()
        local fake, router = setup({ body = '{"model":"nope"}' })
        router.access()
        local status, err = error_of(fake)
        assert.equal(404, status)
        assert.equal("model_not_found", err.code)
        assert.matches("/v1/models", err.message)
        assert.equal("", fake.var.gateway_model or "")
    end)

    it("answers 400 for invalid JSON and wrong content types", function()
        local fake, router = setup({ body = '{"model":' })
        router.access()
        assert.equal(400, (error_of(fake)))
        fake, router = setup({ body = '{"model":"a"}', var = { content_type = "text/plain" } })
        router.access()
        local status, err = error_of(fake)
        assert.equal(400, status)
        assert.equal("invalid_content_type", err.code)
    end)

    it("accepts JSON content types with parameters", function()
        local fake, router = setup({ body = '{"model":"a"}', var = { content_type = "Application/JSON; charset=utf-8" } })
        router.access()
        assert.equal("a", fake.var.gateway_model)
    end)

    it("answers 405 to other methods than POST", function()
        local fake, router = setup({ method = "GET", body = "" })
        router.access()
        assert.equal(405, fake.status)
        assert.equal("POST", fake.header.Allow)
    end)

    it("answers 413 from Content-Length before reading", function()
        local fake, router = setup({ body = "{}", var = { http_content_length = "4096" } })
        router.access()
        assert.equal(413, fake.status)
        assert.is_nil(fake.sent.body_read)
    end)

    for _, state in ipairs({ "loading", "unreachable" }) do
        it("answers 503 model_not_ready with Retry-After, unproxied, for a model that is " .. state, function()
            local fake, router = setup({ body = '{"model":"org/A"}' })
            fake.shared.gateway_health:set("a", state)
            router.access()
            local status, err = error_of(fake)
            assert.equal(503, status)
            assert.equal("model_not_ready", err.code)
            assert.equal("service_unavailable", err.type)
            assert.equal("model", err.param)
            assert.matches('"a"', err.message)
            assert.equal("5", fake.header["Retry-After"])
            -- Logged and counted under its model, but never proxied.
            assert.equal("a", fake.var.gateway_model)
            assert.is_nil(fake.var.gateway_upstream)
        end)
    end

    it("proxies a model whose last check passed, or that has not been checked yet", function()
        local fake, router = setup({ body = '{"model":"b"}' })
        fake.shared.gateway_health:set("b", "ready")
        fake.shared.gateway_health:set("a", "unreachable")
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("gateway-model-b", fake.var.gateway_upstream)
        fake, router = setup({ body = '{"model":"b"}' })
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("gateway-model-b", fake.var.gateway_upstream)
    end)

    it("takes Retry-After from healthCheck.retryAfterSeconds, 0 meaning the check interval", function()
        for retry, want in pairs({ [12] = "12", [0] = "3" }) do
            local fake, router = setup({ body = '{"model":"b"}' },
                { health = { enabled = true, intervalSeconds = 3, retryAfterSeconds = retry } })
            fake.shared.gateway_health:set("b", "unreachable")
            router.access()
            assert.equal(503, fake.status)
            assert.equal(want, fake.header["Retry-After"])
        end
    end)
end)

describe("gateway_router.upstream_error", function()
    -- nginx's error page after a failed proxy attempt of model "b".
    local function upstream_error(status, connect_time, state)
        local fake, router = setup({ var = { status = tostring(status), gateway_model = "b",
                                             upstream_connect_time = connect_time } })
        fake.shared.gateway_health:set("b", state)
        router.upstream_error()
        return fake
    end

    it("keeps 502 and 504 for a model whose state is still ready", function()
        for status, code in pairs({ [502] = "upstream_unavailable", [504] = "upstream_timeout" }) do
            local fake = upstream_error(status, "-", "ready")
            assert.equal(status, fake.status)
            assert.equal(code, stub.sent_json(fake).error.code)
            assert.is_nil(fake.header["Retry-After"])
        end
    end)

    it("answers 503 + Retry-After when the connect failed and the check has meanwhile failed", function()
        for _, connect_time in ipairs({ "-", "0.000, -" }) do
            for _, status in ipairs({ 502, 504 }) do
                local fake = upstream_error(status, connect_time, "unreachable")
                assert.equal(503, fake.status)
                assert.equal("model_not_ready", stub.sent_json(fake).error.code)
                assert.equal("5", fake.header["Retry-After"])
            end
        end
    end)

    it("keeps 502/504 once the connection was made (a reset or a slow answer is no sleeping model)", function()
        for _, connect_time in ipairs({ "0.001", "-, 0.001" }) do
            local fake = upstream_error(502, connect_time, "unreachable")
            assert.equal(502, fake.status)
        end
        local fake = upstream_error(504, "0.000", "loading")
        assert.equal(504, fake.status)
    end)

    it("keeps nginx's status for errors of no routed model", function()
        local fake, router = setup({ var = { status = "502", gateway_model = "", upstream_connect_time = "-" } })
        router.upstream_error()
        assert.equal(502, fake.status)
    end)
end)

describe("gateway_router.credential_in_query", function()
    it("spots API keys in the query string, however spelled", function()
        local _, router = setup({})
        for _, args in ipairs({ "api_key=sk-1", "x=1&API_KEY=sk-1", "api%2Dkey=sk", "token=t", "key=",
                                "access_token=a&b=2" }) do
            assert.is_true(router.credential_in_query(args), args)
        end
        for _, args in ipairs({ "", "api-version=2024-01-01", "stream=true&n=2", "keys=1", "monkey=1" }) do
            assert.is_false(router.credential_in_query(args), args)
        end
        assert.is_false(router.credential_in_query(nil))
    end)

    it("refuses such a request before anything else, with 400", function()
        local fake, router = setup({ body = '{"model":"a"}', var = { args = "api_key=sk-secret" } })
        router.access()
        assert.equal(400, fake.status)
        assert.equal("credential_in_query", stub.sent_json(fake).error.code)
        assert.is_nil(fake.sent.body_read)
    end)
end)

describe("gateway_router with API keys", function()
    local KEYS = {
        { name = "team-b", digest = "digest:sk-bbbbbbbbbbbbbbbb", all = false, models = { b = true },
          requests_per_minute = 2 },
    }

    it("answers 401 before reading the body", function()
        local fake, router = setup({ body = '{"model":"b"}' }, { auth_enabled = true, keys = KEYS })
        router.access()
        assert.equal(401, fake.status)
        assert.is_nil(fake.sent.body_read)
    end)

    it("routes an allowed model and logs the key's name, never the key", function()
        local fake, router = setup({ body = '{"model":"b"}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = KEYS })
        router.access()
        assert.equal("b", fake.var.gateway_model)
        assert.equal("team-b", fake.var.gateway_key)
    end)

    it("answers 404 for a model the key may not use", function()
        local fake, router = setup({ body = '{"model":"a"}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = KEYS })
        router.access()
        assert.equal(404, fake.status)
        assert.equal("model_not_found", stub.sent_json(fake).error.code)
    end)

    it("answers 429 with Retry-After over the key's rate", function()
        local fake, router = setup({ body = '{"model":"b"}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = KEYS })
        router.access()
        router.access()
        assert.is_nil(fake.sent.exited)
        router.access()
        assert.equal(429, fake.status)
        assert.equal("rate_limit_exceeded", stub.sent_json(fake).error.code)
        assert.truthy(tonumber(fake.header["Retry-After"]))
    end)
end)

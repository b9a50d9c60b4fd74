local stub = require "ngx_stub"

local function routes()
    return {
        { name = "a", aliases = { "org/A" }, host = "svc-a.ns.svc.cluster.local",
          adapters = { { name = "a-sql", source = "org/sql" } },
          balancing = { policy = "least-request" }, discovery = { srv = "_http._tcp.svc-a-pods.ns.svc.cluster.local" } },
        { name = "b", aliases = {}, host = "svc-b.ns.svc.cluster.local",
          balancing = { policy = "least-request" }, discovery = { srv = "_http._tcp.svc-b-pods.ns.svc.cluster.local" } },
    }
end

-- Endpoint id -> health state ("ready", "loading", "unreachable"; nil: not checked yet).
local function set_health(fake, model, id, state)
    fake.shared.gateway_endpoints:set("h\0" .. model .. "\0" .. id, state)
    require("gateway_endpoints").bump(model)
end

-- A router over a loaded config, with the request described by opts. Models a
-- and b have one discovered pod each (10.0.0.1:8000, 10.0.0.2:8000).
local function setup(opts, settings)
    opts.var = opts.var or {}
    opts.var.uri = opts.var.uri or "/v1/chat/completions"
    local fake = stub.reset(opts)
    local config = require "gateway_config"
    local list = routes()
    config.routes = list
    config.by_name = assert(config.index_routes(list))
    config.default_route = list[1]
    config.max_body = 1024
    config.auth_enabled = false
    config.by_lower = { a = "a", ["org/a"] = "a", b = "b" }
    config.cors = {}
    config.budget = { failMode = "open", prefix = "" }
    config.usage_enabled = true
    config.health = { enabled = true, intervalSeconds = 5 }
    config.loaded = true
    for k, v in pairs(settings or {}) do
        config[k] = v
    end
    local endpoints = require "gateway_endpoints"
    endpoints.publish("a", { { address = "10.0.0.1", port = 8000 } })
    endpoints.publish("b", { { address = "10.0.0.2", port = 8000 } })
    fake.shared.gateway_endpoints:set("resolved", true)
    return fake, require "gateway_router"
end

local function error_of(fake)
    return fake.status, stub.sent_json(fake).error
end

describe("gateway_router.access", function()
    it("routes by the body's model to one of its pods and sets the nginx variables", function()
        local fake, router = setup({ body = '{"model":"org/A","messages":[]}' })
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("a", fake.var.gateway_model)
        assert.equal("", fake.var.gateway_route or "") -- X-Gateway-Model upstream: the model itself
        assert.equal("a\0" .. "10.0.0.1:8000", fake.var.gateway_inflight)
        assert.equal("10.0.0.1", fake.ctx.endpoint.address)
        assert.equal("svc-a.ns.svc.cluster.local", fake.var.gateway_upstream_host)
        assert.equal("org/A", fake.var.gateway_requested_model)
        -- In flight on that pod until the log phase.
        assert.equal(1, fake.shared.gateway_inflight:get("a\0" .. "10.0.0.1:8000"))
        fake.var.status, fake.var.bytes_sent, fake.var.request_time, fake.var.upstream_status = "200", "10", "0.1", "200"
        router.log()
        assert.is_nil(fake.shared.gateway_inflight:get("a\0" .. "10.0.0.1:8000"))
        assert.is_nil(fake.ctx.inflight) -- released once: the request's ngx.ctx holds the key
    end)

    it("routes a LoRA adapter's name to its model's pods, under the adapter's own name", function()
        local fake, router = setup({ body = '{"model":"a-sql","messages":[]}' })
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("a-sql", fake.var.gateway_model)
        assert.equal("a", fake.var.gateway_route) -- X-Gateway-Model upstream: the adapter's model
        assert.equal("10.0.0.1:8000", fake.ctx.endpoint.id)
        -- A key that lists the model only does not reach its adapter (and learns nothing of it).
        local keys = { { name = "k", digest = "digest:sk-kkkkkkkkkkkkkkkk", all = false, models = { a = true } } }
        fake, router = setup({ body = '{"model":"a-sql","messages":[]}',
                               var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
                             { auth_enabled = true, keys = keys })
        router.access()
        local status, err = error_of(fake)
        assert.equal(404, status)
        assert.equal("model_not_found", err.code)
        keys[1].models = { ["a-sql"] = true }
        fake, router = setup({ body = '{"model":"a-sql","messages":[]}',
                               var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
                             { auth_enabled = true, keys = keys })
        router.access()
        assert.equal("a-sql", fake.var.gateway_model)
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
        it("answers 503 model_not_ready with Retry-After, unproxied, for a model whose pods are " .. state, function()
            local fake, router = setup({ body = '{"model":"org/A"}' })
            set_health(fake, "a", "10.0.0.1:8000", state)
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
            assert.is_nil(fake.var.gateway_inflight)
        end)
    end

    it("answers 503 for a model with no pod (its Service does not exist yet, or is scaled to zero)", function()
        local fake, router = setup({ body = '{"model":"a"}' })
        require("gateway_endpoints").publish("a", {})
        router.access()
        local status, err = error_of(fake)
        assert.equal(503, status)
        assert.matches("no ready replica", err.message)
    end)

    it("proxies to a pod whose last check passed, or that has not been checked yet", function()
        local fake, router = setup({ body = '{"model":"b"}' })
        set_health(fake, "b", "10.0.0.2:8000", "ready")
        set_health(fake, "a", "10.0.0.1:8000", "unreachable")
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("10.0.0.2:8000", fake.ctx.endpoint.id)
        fake, router = setup({ body = '{"model":"b"}' })
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("10.0.0.2:8000", fake.ctx.endpoint.id)
    end)

    it("skips a pod whose connect failed, until failTimeoutSeconds pass", function()
        local fake, router = setup({ body = '{"model":"b"}' }, { health = { enabled = true, intervalSeconds = 5,
                                                                           failTimeoutSeconds = 10 } })
        local route = require("gateway_config").by_name.b
        require("gateway_health").failed(route, "10.0.0.2:8000")
        router.access()
        assert.equal(503, fake.status)
        fake.clock = 1000.5 + 11
        fake.status = 0
        fake.sent.exited = nil
        router.access()
        assert.is_nil(fake.sent.exited)
        assert.equal("10.0.0.2:8000", fake.ctx.endpoint.id)
    end)

    it("takes Retry-After from healthCheck.retryAfterSeconds, 0 meaning the check interval", function()
        for retry, want in pairs({ [12] = "12", [0] = "3" }) do
            local fake, router = setup({ body = '{"model":"b"}' },
                { health = { enabled = true, intervalSeconds = 3, retryAfterSeconds = retry } })
            set_health(fake, "b", "10.0.0.2:8000", "unreachable")
            router.access()
            assert.equal(503, fake.status)
            assert.equal(want, fake.header["Retry-After"])
        end
    end)
end)

describe("gateway_router.upstream_error", function()
    -- nginx's error page after a failed proxy attempt of model "b" to its pod.
    local function upstream_error(status, connect_time, state)
        local fake, router = setup({ var = { status = tostring(status), gateway_model = "b",
                                             gateway_inflight = "b\0" .. "10.0.0.2:8000",
                                             upstream_connect_time = connect_time } })
        set_health(fake, "b", "10.0.0.2:8000", state)
        router.upstream_error()
        return fake
    end

    it("answers 503 + Retry-After when the connect failed and the model has no usable pod left", function()
        for _, connect_time in ipairs({ "-", "0.000, -" }) do
            for _, status in ipairs({ 502, 504 }) do
                local fake = upstream_error(status, connect_time, "ready")
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
            assert.equal("upstream_unavailable", stub.sent_json(fake).error.code)
            assert.is_nil(fake.header["Retry-After"])
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

    it("tells a key without access to the default model to name one, without naming the default", function()
        local keys = { { name = "only-b", digest = "digest:sk-bbbbbbbbbbbbbbbb", all = false, models = { b = true } } }
        local fake, router = setup({ body = '{"messages":[]}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = keys })
        router.access()
        local status, err = error_of(fake)
        assert.equal(400, status)
        assert.equal("model_required", err.code)
        assert.is_nil(err.message:find('"a"', 1, true))
        keys[1].default_route = require("gateway_config").by_name.b
        fake, router = setup({ body = '{"messages":[]}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = keys })
        router.access()
        assert.equal("b", fake.var.gateway_model)
    end)

    it("sets OpenAI's rate-limit headers for a key with a limit", function()
        local fake, router = setup({ body = '{"model":"b"}', var = { http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" } },
            { auth_enabled = true, keys = KEYS })
        router.access()
        assert.equal(2, fake.var.gateway_ratelimit_limit)
        assert.equal(1, fake.var.gateway_ratelimit_remaining)
        assert.matches("^%d+s$", fake.var.gateway_ratelimit_reset)
    end)
end)

describe("gateway_router edge cases of real clients", function()
    it("refuses a compressed body by name", function()
        local fake, router = setup({ body = "\31\139", var = { http_content_encoding = "gzip" } })
        router.access()
        local status, err = error_of(fake)
        assert.equal(415, status)
        assert.equal("unsupported_content_encoding", err.code)
    end)

    it("marks 502/504 after a connection was made as not to be retried by the SDKs", function()
        local fake, router = setup({ var = { status = "504", gateway_model = "b", gateway_inflight = "b\0" .. "10.0.0.2:8000",
                                             upstream_connect_time = "0.001" } })
        router.upstream_error()
        assert.equal(504, fake.status)
        assert.equal("false", fake.var.gateway_should_retry)
        fake, router = setup({ var = { status = "502", gateway_model = "b", upstream_connect_time = "-" } })
        fake.shared.gateway_endpoints:set("h\0b\0" .. "10.0.0.2:8000", "ready")
        router.upstream_error()
        assert.is_nil(fake.var.gateway_should_retry)
    end)
end)

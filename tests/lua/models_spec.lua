local stub = require "ngx_stub"
local cjson = require "cjson.safe"

local function routes()
    local out = {}
    for i, r in ipairs({ { name = "a", aliases = { "org/A" }, adapters = { { name = "a-sql", source = "org/sql" } } },
                         { name = "b", aliases = {} } }) do
        r.host = r.name
        r.balancing = { policy = "least-request" }
        r.discovery = { srv = "_http._tcp." .. r.name .. "-pods" }
        out[i] = r
    end
    return out
end

-- Model a: one pod, b: two pods; health states by pod (nil: not checked yet).
local function discover(fake, a_state, b_states)
    local endpoints = require "gateway_endpoints"
    endpoints.publish("a", { { address = "10.0.0.1", port = 8000 } })
    endpoints.publish("b", { { address = "10.0.0.2", port = 8000 }, { address = "10.0.0.3", port = 8000 } })
    local dict = fake.shared.gateway_endpoints
    dict:set("resolved", true)
    dict:set("h\0a\0" .. "10.0.0.1:8000", a_state)
    for i, state in ipairs(b_states or {}) do
        dict:set("h\0b\0" .. "10.0.0." .. (i + 1) .. ":8000", state)
    end
end

local function setup(opts, settings)
    opts.var = opts.var or {}
    opts.var.uri = "/v1/models"
    opts.method = opts.method or "GET"
    local fake = stub.reset(opts)
    local config = require "gateway_config"
    config.routes = routes()
    config.by_name = assert(config.index_routes(config.routes))
    config.auth_enabled = false
    config.by_lower = { a = "a", ["org/a"] = "a", b = "b" }
    config.cors = {}
    config.health = { enabled = true, intervalSeconds = 5 }
    config.created = 1700000000
    for k, v in pairs(settings or {}) do
        config[k] = v
    end
    return fake, require "gateway_models"
end

describe("gateway_models", function()
    it("lists every model in the OpenAI format, with aliases, readiness and replicas", function()
        local fake, models = setup({})
        discover(fake, "ready", { "loading", "loading" })
        models.list()
        local doc = stub.sent_json(fake)
        assert.equal("list", doc.object)
        assert.equal(3, #doc.data)
        local a, b = doc.data[1], doc.data[3]
        assert.same({ "id", "object", "created", "owned_by" }, { a.id and "id", a.object and "object",
            a.created and "created", a.owned_by and "owned_by" })
        assert.equal("a", a.id)
        assert.equal("model", a.object)
        assert.same({ "org/A" }, a.aliases)
        assert.is_true(a.ready)
        assert.is_false(b.ready)
        assert.equal("loading", b.status)
        assert.same({ ready = 1, total = 1 }, a.replicas)
        assert.same({ ready = 0, total = 2 }, b.replicas)
        -- Like vLLM: a model's parent is null; an adapter follows its model, with its model as parent,
        -- its source as root, and its model's readiness.
        assert.equal(cjson.null, a.parent)
        local sql = doc.data[2]
        assert.same({ "a-sql", "a", "org/sql", true }, { sql.id, sql.parent, sql.root, sql.ready })
        assert.same(a.replicas, sql.replicas)
        -- An empty alias list stays a JSON list.
        assert.matches('"aliases":%[%]', table.concat(fake.sent.body))
    end)

    it("says null readiness before discovery and before the first health check", function()
        local fake, models = setup({})
        models.list()
        assert.equal(cjson.null, stub.sent_json(fake).data[1].ready)
        assert.equal("unknown", stub.sent_json(fake).data[1].status)
        fake, models = setup({})
        discover(fake, nil, { "ready", nil })
        models.list()
        local doc = stub.sent_json(fake)
        assert.equal(cjson.null, doc.data[1].ready)
        assert.same({ ready = 1, total = 1 }, doc.data[1].replicas)
        assert.is_true(doc.data[3].ready)
        assert.same({ ready = 2, total = 2 }, doc.data[3].replicas)
    end)

    it("says no_endpoints for a model without pods", function()
        local fake, models = setup({})
        fake.shared.gateway_endpoints:set("resolved", true)
        models.get("a")
        local doc = stub.sent_json(fake)
        assert.is_false(doc.ready)
        assert.equal("no_endpoints", doc.status)
        assert.same({ ready = 0, total = 0 }, doc.replicas)
    end)

    it("lists only what the key may use", function()
        local keys = { { name = "k", digest = "digest:sk-kkkkkkkkkkkkkkkk", all = false, models = { b = true } } }
        local fake, models = setup({ var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
            { auth_enabled = true, keys = keys })
        models.list()
        local doc = stub.sent_json(fake)
        assert.equal(1, #doc.data)
        assert.equal("b", doc.data[1].id)
        -- An adapter is listed for a key that lists it, without its model.
        keys[1].models = { ["a-sql"] = true }
        fake, models = setup({ var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
            { auth_enabled = true, keys = keys })
        models.list()
        doc = stub.sent_json(fake)
        assert.same({ "a-sql" }, { doc.data[1].id, doc.data[2] })
        fake, models = setup({ var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
            { auth_enabled = true, keys = keys })
        models.get("a")
        assert.equal(404, fake.status)
    end)

    it("needs a key when auth is on", function()
        local fake, models = setup({}, { auth_enabled = true, keys = {} })
        models.list()
        assert.equal(401, fake.status)
    end)

    it("gets one model by name or alias, 404 otherwise", function()
        local fake, models = setup({})
        models.get("org/A")
        assert.equal("a", stub.sent_json(fake).id)
        fake, models = setup({})
        models.get("a-sql")
        assert.same({ "a-sql", "a" }, { stub.sent_json(fake).id, stub.sent_json(fake).parent })
        fake, models = setup({})
        models.get("zzz")
        assert.equal(404, fake.status)
        assert.equal("model_not_found", stub.sent_json(fake).error.code)
    end)
end)

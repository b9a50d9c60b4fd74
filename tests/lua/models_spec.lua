local stub = require "ngx_stub"
local cjson = require "cjson.safe"

local ROUTES = {
    { name = "a", aliases = { "org/A" }, upstream = "gateway-model-a" },
    { name = "b", aliases = {}, upstream = "gateway-model-b" },
}

local function setup(opts, settings)
    opts.var = opts.var or {}
    opts.var.uri = "/v1/models"
    opts.method = opts.method or "GET"
    local fake = stub.reset(opts)
    local config = require "gateway_config"
    config.routes = ROUTES
    config.by_name = assert(config.index_routes(ROUTES))
    config.auth_enabled = false
    config.health = { enabled = true, intervalSeconds = 5 }
    config.created = 1700000000
    for k, v in pairs(settings or {}) do
        config[k] = v
    end
    return fake, require "gateway_models"
end

describe("gateway_models", function()
    it("lists every model in the OpenAI format, with aliases and readiness", function()
        local fake, models = setup({})
        fake.shared.gateway_health:set("a", "ready")
        fake.shared.gateway_health:set("b", "loading")
        models.list()
        local doc = stub.sent_json(fake)
        assert.equal("list", doc.object)
        assert.equal(2, #doc.data)
        local a, b = doc.data[1], doc.data[2]
        assert.same({ "id", "object", "created", "owned_by" }, { a.id and "id", a.object and "object",
            a.created and "created", a.owned_by and "owned_by" })
        assert.equal("a", a.id)
        assert.equal("model", a.object)
        assert.same({ "org/A" }, a.aliases)
        assert.is_true(a.ready)
        assert.is_false(b.ready)
        assert.equal("loading", b.status)
        -- An empty alias list stays a JSON list.
        assert.matches('"aliases":%[%]', table.concat(fake.sent.body))
    end)

    it("says null readiness before the first health check", function()
        local fake, models = setup({})
        models.list()
        assert.equal(cjson.null, stub.sent_json(fake).data[1].ready)
    end)

    it("lists only what the key may use", function()
        local keys = { { name = "k", digest = "digest:sk-kkkkkkkkkkkkkkkk", all = false, models = { b = true } } }
        local fake, models = setup({ var = { http_authorization = "Bearer sk-kkkkkkkkkkkkkkkk" } },
            { auth_enabled = true, keys = keys })
        models.list()
        local doc = stub.sent_json(fake)
        assert.equal(1, #doc.data)
        assert.equal("b", doc.data[1].id)
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
        models.get("zzz")
        assert.equal(404, fake.status)
        assert.equal("model_not_found", stub.sent_json(fake).error.code)
    end)
end)

local stub = require "ngx_stub"
local cjson = require "cjson.safe"

local function config_dir(routes, settings)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir) == 0 or true)
    stub.write_file(dir .. "/routes.json", cjson.encode(routes))
    stub.write_file(dir .. "/gateway.json", cjson.encode(settings))
    return dir
end

local BALANCING = { policy = "least-request" }
local ROUTES = {
    defaultModel = "b",
    routes = {
        { name = "a", aliases = { "org/A" }, host = "a", balancing = BALANCING,
          discovery = { srv = "_http._tcp.vllm-a-pods.llm.svc.cluster.local" } },
        { name = "b", aliases = {}, host = "b", balancing = BALANCING,
          discovery = { servers = { { host = "10.0.0.9", port = 8000 } } } },
    },
}

describe("gateway_config", function()
    local config
    before_each(function()
        stub.reset()
        config = require "gateway_config"
    end)

    it("parses nginx sizes", function()
        assert.equal(64 * 1024 * 1024, config.parse_size("64m"))
        assert.equal(512 * 1024, config.parse_size("512K"))
        assert.equal(1000, config.parse_size("1000"))
        assert.equal(2 * 1024 ^ 3, config.parse_size("2g"))
        assert.is_nil(config.parse_size("1.5m"))
        assert.is_nil(config.parse_size("64mb"))
        assert.is_nil(config.parse_size(nil))
    end)

    it("indexes names and aliases, and refuses a name used twice", function()
        local by_name = assert(config.index_routes(ROUTES.routes))
        assert.equal("a", by_name["org/A"].name)
        assert.equal("b", by_name.b.name)
        local _, err = config.index_routes({ ROUTES.routes[1], { name = "b", aliases = { "a" }, host = "b",
                                              balancing = BALANCING, discovery = ROUTES.routes[2].discovery } })
        assert.matches('"a" is used twice', err)
    end)

    it("prepares each route for the request path, and refuses a route it cannot use", function()
        local route = assert(config.prepare_route({ name = "m", host = "h", healthPath = "/ping",
            discovery = { srv = "_http._tcp.x" }, balancing = { policy = "session", sessionHeader = "X-Session-Id" } }, 1))
        assert.equal("http_x_session_id", route.balancing.header_var)
        assert.equal("/ping", route.health_path)
        assert.equal(3, route.balancing.maxTries)
        assert.equal("ver\0m", route.version_key)
        for _, bad in ipairs({
            { name = "m", host = "h", balancing = { policy = "random" }, discovery = { srv = "x" } },
            { name = "m", host = "h", balancing = BALANCING, discovery = {} },
            { name = "m", host = "h", balancing = BALANCING, discovery = { servers = { { host = "x" } } } },
            { name = "m", balancing = BALANCING, discovery = { srv = "x" } },
        }) do
            local ok, err = config.prepare_route(bad, 7)
            assert.is_nil(ok)
            assert.matches("routes%[7%]", err)
        end
    end)

    it("knows which body fields hold session keys and whether DNS is needed", function()
        local routes = {
            { name = "s", host = "h", balancing = { policy = "session", sessionField = "user" },
              discovery = { servers = { { host = "10.0.0.1", port = 1 } } } },
            { name = "p", host = "h", balancing = { policy = "prefix", sessionField = "ignored" },
              discovery = { servers = { { host = "10.0.0.2", port = 1 } } } },
        }
        config.init(config_dir({ routes = routes }, { body = { maxSize = "1m" } }))
        assert.same({ user = true }, config.session_fields)
        assert.is_false(config.needs_dns)
        routes[2].discovery = { servers = { { host = "external.example", port = 80 } } }
        config.init(config_dir({ routes = routes }, { body = { maxSize = "1m" } }))
        assert.is_true(config.needs_dns)
    end)

    it("loads routes, the default model and settings", function()
        local dir = config_dir(ROUTES, { body = { maxSize = "1m" }, auth = { enabled = false },
                                         healthCheck = { enabled = true, intervalSeconds = 5 } })
        config.init(dir)
        assert.is_true(config.loaded)
        assert.equal("b", config.default_route.name)
        assert.equal(1024 * 1024, config.max_body)
        assert.is_false(config.auth_enabled)
        assert.equal(5, config.health.intervalSeconds)
    end)

    it("has no default model when defaultModel is empty", function()
        local dir = config_dir({ defaultModel = "", routes = ROUTES.routes }, { body = { maxSize = "1m" } })
        config.init(dir)
        assert.is_nil(config.default_route)
    end)

    it("stops nginx with a message on a broken file", function()
        local dir = config_dir(ROUTES, { body = { maxSize = "lots" } })
        assert.has_error(function() config.init(dir) end, "api-gateway: gateway.json: body.maxSize is not an nginx size")
        stub.write_file(dir .. "/routes.json", "{not json")
        assert.has_error(function() config.init(dir) end)
    end)

    it("loads API keys: digests only, models resolved through aliases", function()
        local by_name = assert(config.index_routes(ROUTES.routes))
        local keys = assert(config.load_keys({
            { name = "all", key = "sk-0123456789abcdef", models = { "*" }, requestsPerMinute = 60 },
            { name = "some", key = "sk-fedcba9876543210", models = { "org/A", "missing" } },
        }, by_name, ngx.sha1_bin))
        assert.equal("digest:sk-0123456789abcdef", keys[1].digest)
        assert.is_nil(keys[1].key)
        assert.is_true(keys[1].all)
        assert.equal(60, keys[1].requests_per_minute)
        assert.same({ a = true }, keys[2].models)
        assert.is_nil(keys[2].requests_per_minute)
    end)

    it("refuses bad API key entries", function()
        local by_name = assert(config.index_routes(ROUTES.routes))
        for _, entries in ipairs({ {}, { { key = "sk-0123456789abcdef" } }, { { name = "x", key = "short" } },
                                   { { name = "x", key = "sk-0123456789abcdef", requestsPerMinute = -1 } },
                                   { { name = "x", key = "sk-0123456789abcdef", models = "a" } } }) do
            local keys, err = config.load_keys(entries, by_name, ngx.sha1_bin)
            assert.is_nil(keys)
            assert.is_string(err)
        end
    end)

    it("refuses a keys file with a key or a name twice, naming entries, never keys", function()
        local by_name = assert(config.index_routes(ROUTES.routes))
        local _, err = config.load_keys({ { name = "x", key = "sk-0123456789abcdef" },
                                          { name = "y", key = "sk-0123456789abcdef" } }, by_name, ngx.sha1_bin)
        assert.matches("#2 %(y%) has the same key as API key #1 %(x%)", err)
        assert.is_nil(err:find("sk-", 1, true))
        _, err = config.load_keys({ { name = "x", key = "sk-0123456789abcdef" },
                                    { name = "x", key = "sk-fedcba9876543210" } }, by_name, ngx.sha1_bin)
        assert.matches("#2 %(x%) has the same name", err)
        _, err = config.load_keys({ { name = "x", key = "sk-01234567 89abcdef" } }, by_name, ngx.sha1_bin)
        assert.matches("whitespace", err)
    end)

    it("indexes LoRA adapters as models of their own on their model's route", function()
        local routes = { { name = "base", host = "h", balancing = BALANCING, discovery = { srv = "x" },
                           adapters = { { name = "sql", source = "org/sql-lora" } } } }
        local by_name = assert(config.index_routes(routes))
        local route, model = config.lookup("sql", by_name)
        assert.equal("base", route.name)
        assert.equal("sql", model)
        assert.equal("org/sql-lora", route.adapter_source.sql)
        model = select(2, config.lookup("base", by_name))
        assert.equal("base", model)
        assert.is_nil(config.lookup("nope", by_name))
        -- A key lists adapters by their own name: the model does not grant its adapters, nor the reverse.
        local keys = assert(config.load_keys({ { name = "x", key = "sk-0123456789abcdef", models = { "sql" } } },
            by_name, ngx.sha1_bin))
        assert.same({ sql = true }, keys[1].models)
        -- An adapter cannot be a key's default: a request without "model" reaches the base model.
        local _, err = config.load_keys({ { name = "x", key = "sk-0123456789abcdef", defaultModel = "sql" } },
            by_name, ngx.sha1_bin)
        assert.matches("is a LoRA adapter of base", err)
        -- An adapter's name is a name like any other: used twice, refused.
        routes[2] = { name = "sql", host = "h", balancing = BALANCING, discovery = { srv = "y" } }
        _, err = config.index_routes(routes)
        assert.matches('"sql" is used twice', err)
        _, err = config.prepare_route({ name = "m", host = "h", balancing = BALANCING, discovery = { srv = "x" },
                                        adapters = { { name = "a" } } }, 1)
        assert.matches("adapters%[1%] needs a name and a source", err)
    end)

    it("takes a key's own default model, which must be one it may use", function()
        local by_name = assert(config.index_routes(ROUTES.routes))
        local keys = assert(config.load_keys({ { name = "x", key = "sk-0123456789abcdef", models = { "a" },
                                                 defaultModel = "org/A" } }, by_name, ngx.sha1_bin))
        assert.equal("a", keys[1].default_route.name)
        local _, err = config.load_keys({ { name = "x", key = "sk-0123456789abcdef", models = { "a" },
                                            defaultModel = "b" } }, by_name, ngx.sha1_bin)
        assert.matches("not one of its models", err)
    end)
end)

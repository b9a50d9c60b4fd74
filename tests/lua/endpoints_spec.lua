local stub = require "ngx_stub"

local function setup(discovery, health)
    local fake = stub.reset()
    local config = require "gateway_config"
    local route = assert(config.prepare_route({ name = "m", host = "h", balancing = { policy = "least-request" },
                                                discovery = discovery or { srv = "_http._tcp.m-pods" } }, 1))
    config.routes = { route }
    config.health = health or { enabled = true, intervalSeconds = 5 }
    config.loaded = true
    return fake, require "gateway_endpoints", require "gateway_health", route
end

describe("gateway_endpoints", function()
    it("publishes a model's endpoints once per change, and each worker rebuilds its view then", function()
        local fake, endpoints, _, route = setup()
        assert.is_true(endpoints.publish("m", { { address = "10.0.0.2", port = 8000 },
                                                { address = "10.0.0.1", port = 8001 } }))
        local view = endpoints.view(route)
        assert.same({ "10.0.0.1:8001", "10.0.0.2:8000" }, { view.list[1].id, view.list[2].id })
        assert.equal(8001, view.list[1].port)
        -- Same set in another order: no new version, the same table.
        assert.is_false(endpoints.publish("m", { { address = "10.0.0.1", port = 8001 },
                                                 { address = "10.0.0.2", port = 8000 } }))
        assert.equal(view, endpoints.view(route))
        -- A state change (gateway_health bumps the same version): the same list, so the
        -- balancer keeps its ring.
        local list = view.list
        endpoints.bump("m")
        assert.equal(list, endpoints.view(route).list)
        assert.equal(2, endpoints.view(route).version)
        assert.is_true(endpoints.publish("m", {}))
        assert.equal(0, #endpoints.view(route).list)
        assert.equal(3, fake.shared.gateway_endpoints:get("ver\0m"))
    end)

    it("sees another worker's change within VERSION_SECONDS, its own at once", function()
        local fake, endpoints, _, route = setup()
        fake.clock = 1000
        endpoints.publish("m", { { address = "10.0.0.1", port = 8000 } })
        assert.equal(1, #endpoints.view(route).list)
        -- Another worker (discovery runs in worker 0) publishes a second pod.
        fake.shared.gateway_endpoints:set("eps\0m", "10.0.0.1:8000 10.0.0.2:8000")
        fake.shared.gateway_endpoints:incr("ver\0m", 1, 0)
        fake.clock = 1000 + endpoints.VERSION_SECONDS / 2
        assert.equal(1, #endpoints.view(route).list)
        fake.clock = 1000 + endpoints.VERSION_SECONDS
        assert.equal(2, #endpoints.view(route).list)
        -- This worker's own bump (a failed connect, gateway_health) is read back at once.
        fake.shared.gateway_endpoints:set("eps\0m", "10.0.0.2:8000")
        endpoints.bump("m")
        assert.equal(1, #endpoints.view(route).list)
    end)

    it("takes fixed IP servers as they are, without a lookup", function()
        local _, endpoints, _, route = setup({ servers = { { host = "127.0.0.1", port = 9001 },
                                                           { host = "127.0.0.2", port = 9002 } } })
        local list = assert(endpoints.lookup(route, {}, 100))
        assert.same({ { address = "127.0.0.1", port = 9001 }, { address = "127.0.0.2", port = 9002 } }, list)
    end)

    it("is not resolved until the first discovery round ran", function()
        local fake, endpoints = setup()
        assert.is_false(endpoints.resolved())
        fake.shared.gateway_endpoints:set("resolved", true)
        assert.is_true(endpoints.resolved())
    end)
end)

describe("gateway_health.summary", function()
    local function state_of(fake, health, route, states, opts)
        fake.shared.gateway_endpoints:set("resolved", true)
        local list = {}
        for i, state in ipairs(states) do
            list[i] = { address = "10.0.0." .. i, port = 8000 }
            fake.shared.gateway_endpoints:set("h\0m\0" .. "10.0.0." .. i .. ":8000", state ~= "unchecked" and state or nil)
        end
        require("gateway_endpoints").publish("m", list)
        require("gateway_endpoints").bump("m")
        if opts and opts.failed then
            health.failed(route, opts.failed)
        end
        return health.summary(route)
    end

    it("names each state of a model, with its usable and total pods", function()
        local cases = {
            { {}, "no_endpoints", 0, 0 },
            { { "ready", "loading" }, "ready", 1, 2 },
            { { "loading", "unreachable" }, "loading", 0, 2 },
            { { "unreachable" }, "unreachable", 0, 1 },
            { { "unchecked", "unchecked" }, "unknown", 2, 2 },
            { { "unchecked", "ready" }, "ready", 2, 2 },
        }
        for _, case in ipairs(cases) do
            local fake, _, health, route = setup()
            local state, usable, total = state_of(fake, health, route, case[1])
            assert.same({ case[2], case[3], case[4] }, { state, usable, total }, table.concat(case[1], ","))
        end
    end)

    it("counts unchecked pods as ready when health checks are off", function()
        local fake, _, health, route = setup(nil, { enabled = false })
        assert.same({ "ready", 1, 1 }, { state_of(fake, health, route, { "unchecked" }) })
    end)

    it("leaves a pod out while a failed connect is recent, and a passing check brings it back", function()
        local fake, _, health, route = setup(nil, { enabled = true, intervalSeconds = 5, failTimeoutSeconds = 10 })
        assert.same({ "unreachable", 0, 1 }, { state_of(fake, health, route, { "ready" }, { failed = "10.0.0.1:8000" }) })
        fake.clock = 1000.5 + 10.5
        assert.same({ "ready", 1, 1 }, { health.summary(route) })
    end)

    it("tells ready, loading and unreachable apart from a status code", function()
        local _, _, health = setup()
        assert.equal("ready", health.classify(200))
        assert.equal("loading", health.classify(503))
        assert.equal("loading", health.classify(404))
        assert.equal("unreachable", health.classify(502))
        assert.equal("unreachable", health.classify(nil))
    end)
end)

local stub = require "ngx_stub"

-- Model "m" with the given pods and balancing settings, discovered and not checked yet.
local function setup(ids, balancing)
    local fake = stub.reset()
    local config = require "gateway_config"
    local route = assert(config.prepare_route({ name = "m", host = "h", balancing = balancing,
                                                discovery = { srv = "_http._tcp.m-pods" } }, 1))
    config.routes = { route }
    config.health = { enabled = true, intervalSeconds = 5, failTimeoutSeconds = 10 }
    config.loaded = true
    local list = {}
    for _, id in ipairs(ids) do
        local address, port = id:match("^(.+):(%d+)$")
        list[#list + 1] = { address = address, port = tonumber(port) }
    end
    require("gateway_endpoints").publish("m", list)
    fake.shared.gateway_endpoints:set("resolved", true)
    return fake, require "gateway_balancer", route
end

local PODS = { "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000" }

local function set_inflight(fake, id, n)
    fake.shared.gateway_inflight:set("m\0" .. id, n)
end

local function counts(balancer, route, requests)
    local out = {}
    for _, request in ipairs(requests) do
        local ep = balancer.choose(route, request)
        out[ep.id] = (out[ep.id] or 0) + 1
    end
    return out
end

-- n concurrent requests with one shared system prompt, none finishing: pod id -> count.
local function held(balancer, route, n)
    local per = {}
    for _ = 1, n do
        local ep = balancer.choose(route, { prefix = "the one shared system prompt" })
        balancer.acquire(route, ep, { route = route })
        per[ep.id] = (per[ep.id] or 0) + 1
    end
    return per
end

local function keys(n, prefix)
    local out = {}
    for i = 1, n do
        out[i] = (prefix or "key-") .. i
    end
    return out
end

describe("gateway_balancer least-request", function()
    it("picks the pod with the fewest in-flight requests", function()
        local fake, balancer, route = setup(PODS, { policy = "least-request" })
        set_inflight(fake, PODS[1], 3)
        set_inflight(fake, PODS[2], 1)
        set_inflight(fake, PODS[3], 2)
        local ep, decision, n = balancer.choose(route, {})
        assert.equal(PODS[2], ep.id)
        assert.equal("pick", decision)
        assert.equal(3, n)
    end)

    it("breaks ties at random, so every tied pod gets a share", function()
        math.randomseed(3)
        local fake, balancer, route = setup(PODS, { policy = "least-request" })
        set_inflight(fake, PODS[1], 5)
        local requests = {}
        for i = 1, 600 do
            requests[i] = {}
        end
        local got = counts(balancer, route, requests)
        assert.is_nil(got[PODS[1]])
        assert.is_true(got[PODS[2]] > 240 and got[PODS[3]] > 240, tostring(got[PODS[2]]) .. " " .. got[PODS[3]])
    end)

    it("counts a request in flight from acquire to release, once", function()
        local _, balancer, route = setup(PODS, { policy = "least-request" })
        local ep = balancer.choose(route, {})
        local ctx = { route = route }
        balancer.acquire(route, ep, ctx)
        assert.equal(1, balancer.inflight(route, ep))
        balancer.release(ctx)
        assert.equal(0, balancer.inflight(route, ep))
        balancer.release(ctx) -- twice is harmless
        assert.equal(0, balancer.inflight(route, ep))
    end)

    it("releases through the nginx variable where ngx.ctx is empty (the error page), once", function()
        local fake, balancer, route = setup(PODS, { policy = "least-request" })
        local ep = balancer.choose(route, {})
        balancer.acquire(route, ep, { route = route })
        balancer.release({}) -- the named location's fresh ngx.ctx
        assert.equal(0, balancer.inflight(route, ep))
        balancer.release({})
        assert.equal(0, balancer.inflight(route, ep))
        assert.equal("", fake.var.gateway_inflight)
    end)
end)

describe("gateway_balancer round-robin", function()
    it("takes each pod in turn, skipping unusable ones", function()
        local fake, balancer, route = setup(PODS, { policy = "round-robin" })
        local seen = {}
        for _ = 1, 6 do
            local ep = balancer.choose(route, {})
            seen[#seen + 1] = ep.id
        end
        assert.equal(seen[1], seen[4])
        assert.equal(seen[2], seen[5])
        assert.are_not.equal(seen[1], seen[2])
        assert.are_not.equal(seen[2], seen[3])
        fake.shared.gateway_endpoints:set("h\0m\0" .. PODS[2], "unreachable")
        require("gateway_endpoints").bump("m")
        for _ = 1, 6 do
            assert.are_not.equal(PODS[2], balancer.choose(route, {}).id)
        end
    end)
end)

describe("gateway_balancer session", function()
    it("sends the same session key to the same pod, and spreads keys over all pods", function()
        local _, balancer, route = setup(PODS, { policy = "session", loadFactor = 0 })
        local requests = {}
        for i, key in ipairs(keys(3000)) do
            requests[i] = { session = key }
        end
        local first = {}
        for i, request in ipairs(requests) do
            local ep, decision = balancer.choose(route, request)
            assert.equal("affinity", decision)
            first[i] = ep.id
        end
        for i, request in ipairs(requests) do
            assert.equal(first[i], balancer.choose(route, request).id)
        end
        -- Within 25%..42% each (an even split is 33%).
        local got = counts(balancer, route, requests)
        for _, id in ipairs(PODS) do
            assert.is_true(got[id] > 750 and got[id] < 1260, id .. ": " .. tostring(got[id]))
        end
    end)

    it("moves only the keys of a pod that goes away", function()
        local fake, balancer, route = setup(PODS, { policy = "session", loadFactor = 0 })
        local before = {}
        for _, key in ipairs(keys(2000)) do
            before[key] = balancer.choose(route, { session = key }).id
        end
        require("gateway_endpoints").publish("m", { { address = "10.0.0.1", port = 8000 },
                                                    { address = "10.0.0.3", port = 8000 } })
        assert.is_true(fake.shared.gateway_endpoints:get("ver\0m") >= 2)
        for key, was in pairs(before) do
            local now = balancer.choose(route, { session = key }).id
            if was ~= PODS[2] then
                assert.equal(was, now, key)
            else
                assert.are_not.equal(PODS[2], now)
            end
        end
    end)

    it("fails over to the next pod on the ring when the key's own pod is unusable", function()
        local fake, balancer, route = setup(PODS, { policy = "session", loadFactor = 0 })
        local owner = balancer.choose(route, { session = "alice" }).id
        fake.shared.gateway_endpoints:set("h\0m\0" .. owner, "unreachable")
        require("gateway_endpoints").bump("m")
        local ep, decision = balancer.choose(route, { session = "alice" })
        assert.are_not.equal(owner, ep.id)
        assert.equal("failover", decision)
    end)

    it("never spills a session to another pod while its own is usable, whatever the load", function()
        local fake, balancer, route = setup(PODS, { policy = "session", loadFactor = 1.25 })
        local owner = balancer.choose(route, { session = "bob" }).id
        set_inflight(fake, owner, 50)
        local ep, decision = balancer.choose(route, { session = "bob" })
        assert.equal(owner, ep.id)
        assert.equal("affinity", decision)
    end)

    it("falls back to least-request without a key", function()
        local fake, balancer, route = setup(PODS, { policy = "session" })
        set_inflight(fake, PODS[1], 1)
        set_inflight(fake, PODS[3], 1)
        local ep, decision = balancer.choose(route, {})
        assert.equal(PODS[2], ep.id)
        assert.equal("no_key", decision)
    end)

    it("makes the same choice in every gateway replica (the ring depends only on the pods)", function()
        local _, balancer, route = setup(PODS, { policy = "session", loadFactor = 0 })
        local a = {}
        for _, key in ipairs(keys(200)) do
            a[key] = balancer.choose(route, { session = key }).id
        end
        -- Another replica: a fresh worker that discovered the same pods in another order.
        local _, other, route2 = setup({ PODS[3], PODS[1], PODS[2] }, { policy = "session", loadFactor = 0 })
        for key, id in pairs(a) do
            assert.equal(id, other.choose(route2, { session = key }).id)
        end
    end)
end)

describe("gateway_balancer prefix (bounded loads)", function()
    it("keeps affinity while the key's pod is within the bound, and spills beyond it", function()
        local fake, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25 })
        local owner = balancer.choose(route, { prefix = "system prompt A" }).id
        -- Loads 2, 0, 0 (owner first): total 2, bound ceil(1.25 * 3 / 3) = 2, the owner is at it.
        for _, id in ipairs(PODS) do
            set_inflight(fake, id, id == owner and 2 or 0)
        end
        local ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.are_not.equal(owner, ep.id)
        assert.equal("spill", decision)
        -- Loads 1, 1, 1: total 3, bound ceil(1.25 * 4 / 3) = 2: the owner keeps it.
        for _, id in ipairs(PODS) do
            set_inflight(fake, id, 1)
        end
        ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.equal(owner, ep.id)
        assert.equal("affinity", decision)
    end)

    it("never lets one pod take more than loadFactor x the average when every key is the same", function()
        local fake, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25 })
        local per = held(balancer, route, 30)
        for _, id in ipairs(PODS) do
            assert.is_true((per[id] or 0) <= math.ceil(1.25 * 30 / 3), id .. ": " .. tostring(per[id]))
            assert.equal(per[id], fake.shared.gateway_inflight:get("m\0" .. id))
        end
    end)

    it("lets a key's own pod, once it got the key, take it up to warmLoadFactor; a key not seen spills", function()
        local balancing = { policy = "prefix", loadFactor = 1.25, warmLoadFactor = 2, warmSeconds = 300 }
        local fake, balancer, route = setup(PODS, balancing)
        local owner = balancer.choose(route, { prefix = "system prompt A" }).id
        -- Loads 1, 0, 0 (owner first): total 1, bound ceil(1.25 * 2 / 3) = 1, warm ceil(2 * 2 / 3) = 2.
        for _, id in ipairs(PODS) do
            set_inflight(fake, id, id == owner and 1 or 0)
        end
        local ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.same({ owner, "affinity" }, { ep.id, decision })
        -- Over the warm bound (loads 2, 0, 0: ceil(2 * 3 / 3) = 2) it spills, and the spill is a
        -- one-off: back at 1, 0, 0 the key's own pod is still warm.
        set_inflight(fake, owner, 2)
        ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.are_not.equal(owner, ep.id)
        assert.equal("spill", decision)
        set_inflight(fake, owner, 1)
        ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.same({ owner, "affinity" }, { ep.id, decision })
        -- The same key, forgotten (warmSeconds passed, or never seen: a unique prompt): the tight bound.
        for _, k in ipairs(fake.shared.gateway_warm:get_keys()) do
            fake.shared.gateway_warm:delete(k)
        end
        ep, decision = balancer.choose(route, { prefix = "system prompt A" })
        assert.are_not.equal(owner, ep.id)
        assert.equal("spill", decision)
    end)

    it("never lets a warm key's pod take more than warmLoadFactor x the average", function()
        local fake, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25, warmLoadFactor = 2,
                                                    warmSeconds = 300 })
        local per = held(balancer, route, 30)
        local most = 0
        for _, id in ipairs(PODS) do
            most = math.max(most, per[id] or 0)
            assert.equal(per[id], fake.shared.gateway_inflight:get("m\0" .. id))
        end
        assert.is_true(most <= math.ceil(2 * 30 / 3) and most > math.ceil(1.25 * 30 / 3), tostring(most))
    end)

    it("with warmSeconds, spreads new keys evenly where the ring alone piles them up", function()
        local prompts = keys(6, "system prompt ")
        local _, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25 })
        local ring = counts(balancer, route, (function()
            local out = {}
            for i, p in ipairs(prompts) do out[i] = { prefix = p } end
            return out
        end)())
        local most = 0
        for _, id in ipairs(PODS) do
            most = math.max(most, ring[id] or 0)
        end
        assert.is_true(most >= 3, "these six keys hash unevenly on the ring: " .. most)
        _, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25, warmLoadFactor = 2,
                                           warmSeconds = 300 })
        local first = {}
        for _, p in ipairs(prompts) do
            first[p] = balancer.choose(route, { prefix = p }).id
        end
        local per = {}
        for _, id in pairs(first) do
            per[id] = (per[id] or 0) + 1
        end
        assert.same({ 2, 2, 2 }, { per[PODS[1]], per[PODS[2]], per[PODS[3]] })
        -- Each key then stays where it went, its own pod being the one it was placed on.
        for _ = 1, 3 do
            for _, p in ipairs(prompts) do
                local ep, decision = balancer.choose(route, { prefix = p })
                assert.same({ first[p], "affinity" }, { ep.id, decision })
            end
        end
    end)

    it("with warmSeconds, remembers a new key on the pod it spilled to", function()
        local _, ring, ring_route = setup(PODS, { policy = "prefix", loadFactor = 1.25 })
        local owner = ring.choose(ring_route, { prefix = "system prompt B" }).id
        local fake, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25, warmLoadFactor = 2,
                                                    warmSeconds = 300 })
        set_inflight(fake, owner, 1)
        local ep, decision = balancer.choose(route, { prefix = "system prompt B" })
        assert.are_not.equal(owner, ep.id)
        assert.equal("spill", decision)
        set_inflight(fake, owner, 0)
        local again, why = balancer.choose(route, { prefix = "system prompt B" })
        assert.same({ ep.id, "affinity" }, { again.id, why })
    end)

    it("skips pods already tried for this request", function()
        local _, balancer, route = setup(PODS, { policy = "prefix", loadFactor = 1.25 })
        local first = balancer.choose(route, { prefix = "p" })
        local second = balancer.choose(route, { prefix = "p" }, { [first.id] = true })
        assert.are_not.equal(first.id, second.id)
        assert.is_nil(balancer.choose(route, { prefix = "p" }, { [PODS[1]] = true, [PODS[2]] = true,
                                                                 [PODS[3]] = true }))
    end)
end)

describe("gateway_balancer.hash", function()
    it("spreads similar keys over the whole 32-bit range", function()
        stub.reset()
        local balancer = require "gateway_balancer"
        local buckets = {}
        for i = 1, 4000 do
            local h = balancer.hash("user-" .. i)
            assert.is_true(h >= 0 and h < 4294967296)
            local b = math.floor(h / 2 ^ 30) -- four quarters
            buckets[b] = (buckets[b] or 0) + 1
        end
        for b = 0, 3 do
            assert.is_true(buckets[b] > 850 and buckets[b] < 1150, b .. ": " .. tostring(buckets[b]))
        end
    end)
end)

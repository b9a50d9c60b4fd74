local stub = require "ngx_stub"

local function setup()
    local fake = stub.reset()
    return fake, require "gateway_budget"
end

local SETTINGS = { failMode = "open", prefix = "t:" }

describe("gateway_budget.decide", function()
    local _, budget = setup()

    it("refuses requests at the per-minute limit, the previous minute weighted by its overlap", function()
        -- 40 s into the minute: a third of the previous minute still counts.
        local w = 20 / 60
        assert.is_true((budget.decide(0, 9, 0, 0, 0, 0, w, 10, 0, 0, 0)))
        local ok, reason = budget.decide(0, 10, 0, 0, 0, 0, w, 10, 0, 0, 0)
        assert.is_false(ok)
        assert.equal("requests", reason)
        assert.is_false((budget.decide(9, 7, 0, 0, 0, 0, w, 10, 0, 0, 0)))
        assert.is_true((budget.decide(6, 7, 0, 0, 0, 0, w, 10, 0, 0, 0)))
    end)

    it("refuses tokens once the charged ones reach the limit", function()
        assert.is_true((budget.decide(0, 0, 0, 999, 0, 3, 1, 0, 1000, 0, 0)))
        local ok, reason = budget.decide(0, 0, 0, 1000, 0, 3, 1, 0, 1000, 0, 0)
        assert.is_false(ok)
        assert.equal("tokens", reason)
    end)

    it("near the token limit admits a request only when none is in flight on this replica", function()
        -- 700 tokens charged over 7 requests (100 each), limit 900, 1 in flight: 700 + 2 x 100 >= 900.
        local ok, reason = budget.decide(0, 0, 0, 700, 0, 7, 1, 0, 900, 1, 10)
        assert.is_false(ok)
        assert.equal("pace", reason)
        assert.is_true((budget.decide(0, 0, 0, 700, 0, 7, 1, 0, 900, 0, 10)))
        -- Before anything is charged, the request's own estimate stands for the average.
        assert.is_false((budget.decide(0, 0, 0, 0, 0, 0, 1, 0, 900, 2, 400)))
        assert.is_true((budget.decide(0, 0, 0, 0, 0, 0, 1, 0, 900, 1, 400)))
        -- Far from it, requests in flight do not matter.
        assert.is_true((budget.decide(0, 0, 0, 100, 0, 1, 1, 0, 900, 5, 10)))
    end)
end)

describe("gateway_budget.check and charge (this pod's counters)", function()
    it("counts requests, charges tokens at the end and bounds what flies over the limit", function()
        local fake, budget = setup()
        local key = { name = "team", requests_per_minute = 100, tokens_per_minute = 300 }
        local now = 6000.0 -- the start of a minute: nothing of the previous one counts
        local r = assert(budget.check(key, SETTINGS, now))
        assert.is_true(r.ok)
        assert.equal(99, r.requests_left)
        assert.equal(300, r.tokens_left)
        assert.equal(1, fake.shared.gateway_ratelimit:get("f\0team"))
        budget.charge("team", 120, SETTINGS, now)
        assert.is_nil(fake.shared.gateway_ratelimit:get("f\0team"))
        r = budget.check(key, SETTINGS, now)
        assert.is_true(r.ok)
        assert.equal(180, r.tokens_left)
        -- One in flight, 120 charged on average: 120 + 2 x 120 >= 300, so the next one waits.
        r = budget.check(key, SETTINGS, now)
        assert.is_false(r.ok)
        assert.equal("pace", r.reason)
        assert.equal(1, r.retry_after)
        budget.charge("team", 200, SETTINGS, now)
        r = budget.check(key, SETTINGS, now)
        assert.is_false(r.ok)
        assert.equal("tokens", r.reason)
        assert.is_true(r.retry_after >= 1 and r.retry_after <= 60)
    end)
end)

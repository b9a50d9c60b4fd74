local stub = require "ngx_stub"

describe("gateway_ratelimit", function()
    local ratelimit, dict
    before_each(function()
        local fake = stub.reset()
        ratelimit = require "gateway_ratelimit"
        dict = fake.shared.gateway_ratelimit
    end)

    it("allows up to the limit in a minute, then says when to retry", function()
        for i = 1, 3 do
            local ok, remaining, reset = ratelimit.check(dict, "k", 3, 60 * 100 + 10)
            assert.is_true(ok)
            assert.equal(3 - i, remaining)
            assert.equal(50, reset)
        end
        local ok, remaining, retry = ratelimit.check(dict, "k", 3, 60 * 100 + 10)
        assert.is_nil(ok)
        assert.equal(0, remaining)
        assert.equal(50, retry)
    end)

    it("keeps keys apart", function()
        assert.is_true((ratelimit.check(dict, "a", 1, 6000)))
        assert.is_true((ratelimit.check(dict, "b", 1, 6000)))
        assert.is_nil((ratelimit.check(dict, "a", 1, 6000)))
    end)

    it("weights the previous minute by its overlap", function()
        for _ = 1, 10 do
            assert.is_true((ratelimit.check(dict, "k", 10, 6000 + 59)))
        end
        -- 15 s into the next minute, 3/4 of the previous minute still counts: 7.5 of 10.
        assert.is_true((ratelimit.check(dict, "k", 10, 6060 + 15)))
        assert.is_true((ratelimit.check(dict, "k", 10, 6060 + 15)))
        assert.is_true((ratelimit.check(dict, "k", 10, 6060 + 15)))
        local ok, _, retry = ratelimit.check(dict, "k", 10, 6060 + 15)
        assert.is_nil(ok)
        assert.is_true(retry >= 1 and retry <= 45)
        -- A whole minute later the old counts are gone.
        assert.is_true((ratelimit.check(dict, "k", 10, 6180 + 1)))
    end)
end)

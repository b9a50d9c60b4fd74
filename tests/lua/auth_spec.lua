local stub = require "ngx_stub"

local KEYS = {
    { name = "team-a", digest = "digest:sk-aaaaaaaaaaaaaaaa", all = true, models = {} },
    { name = "team-b", digest = "digest:sk-bbbbbbbbbbbbbbbb", all = false, models = { m1 = true } },
}

describe("gateway_auth", function()
    local function auth_with(var)
        stub.reset({ var = var })
        return require "gateway_auth"
    end

    it("compares digests in full", function()
        local auth = auth_with({})
        assert.is_true(auth.equal("abc", "abc"))
        assert.is_false(auth.equal("abc", "abd"))
        assert.is_false(auth.equal("abc", "abcd"))
    end)

    it("accepts a Bearer key", function()
        local auth = auth_with({ http_authorization = "Bearer sk-bbbbbbbbbbbbbbbb" })
        assert.equal("team-b", auth.authenticate(KEYS, ngx.sha1_bin).name)
    end)

    it("accepts x-api-key", function()
        local auth = auth_with({ http_x_api_key = "sk-aaaaaaaaaaaaaaaa" })
        assert.equal("team-a", auth.authenticate(KEYS, ngx.sha1_bin).name)
    end)

    it("answers 401 for a missing, malformed or wrong key", function()
        for _, var in ipairs({ {}, { http_authorization = "Basic abc" }, { http_authorization = "Bearer" },
                               { http_authorization = "Bearer sk-cccccccccccccccc" } }) do
            local auth = auth_with(var)
            local key, err = auth.authenticate(KEYS, ngx.sha1_bin)
            assert.is_nil(key)
            assert.equal(401, err.status)
            assert.equal("invalid_api_key", err.code)
            assert.equal("Bearer", err.headers["WWW-Authenticate"])
        end
    end)

    it("checks every key (no early exit)", function()
        local auth = auth_with({ http_authorization = "Bearer sk-aaaaaaaaaaaaaaaa" })
        local compared = 0
        local equal = auth.equal
        auth.equal = function(a, b) compared = compared + 1; return equal(a, b) end
        auth.authenticate(KEYS, ngx.sha1_bin)
        assert.equal(#KEYS, compared)
    end)

    it("limits keys to their models", function()
        local auth = auth_with({})
        assert.is_true(auth.allows(nil, "m2"))
        assert.is_true(auth.allows(KEYS[1], "m2"))
        assert.is_true(auth.allows(KEYS[2], "m1"))
        assert.is_false(auth.allows(KEYS[2], "m2"))
    end)
end)

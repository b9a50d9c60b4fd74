local stub = require "ngx_stub"
local cjson = require "cjson.safe"

describe("gateway_errors", function()
    local fake, errors
    before_each(function()
        fake = stub.reset({ var = {} })
        errors = require "gateway_errors"
    end)

    it("sends the OpenAI envelope with status, headers and nulls", function()
        errors.send(errors.new(429, "slow down", "rate_limit_exceeded", nil, { ["Retry-After"] = "7" }))
        assert.equal(429, fake.status)
        assert.equal(200, fake.sent.exited)
        assert.equal("application/json", fake.header["Content-Type"])
        assert.equal("7", fake.header["Retry-After"])
        local doc = stub.sent_json(fake)
        assert.same({ "error" }, (function() local k = {} for x in pairs(doc) do k[#k + 1] = x end return k end)())
        assert.equal("slow down", doc.error.message)
        assert.equal("rate_limit_error", doc.error.type)
        assert.equal("rate_limit_exceeded", doc.error.code)
        assert.equal(cjson.null, doc.error.param)
    end)

    it("types client and server errors", function()
        assert.equal("invalid_request_error", errors.type_for(404))
        assert.equal("server_error", errors.type_for(502))
        assert.equal("service_unavailable", errors.type_for(503))
        assert.equal("invalid_request_error", errors.type_for(418))
    end)

    it("turns nginx's own errors into the envelope", function()
        for status, code in pairs({ [413] = "request_too_large", [502] = "upstream_unavailable",
                                    [504] = "upstream_timeout", [400] = "bad_request" }) do
            fake = stub.reset({ var = { status = tostring(status) } })
            errors = require "gateway_errors"
            errors.send_nginx_error()
            assert.equal(status, fake.status)
            assert.equal(code, stub.sent_json(fake).error.code)
        end
    end)

    it("answers nginx's 494 (headers too large) as 400", function()
        fake = stub.reset({ var = { status = "494" } })
        errors = require "gateway_errors"
        errors.send_nginx_error()
        assert.equal(400, fake.status)
        assert.equal("headers_too_large", stub.sent_json(fake).error.code)
    end)
end)

local stub = require "ngx_stub"

describe("gateway_body.model", function()
    local body
    before_each(function()
        stub.reset()
        body = require "gateway_body"
    end)

    local function model(s)
        return body.model(s)
    end

    it("finds the top-level model wherever it is", function()
        assert.equal("m1", model('{"model":"m1","messages":[]}'))
        assert.equal("m1", model('{"messages":[{"role":"user","content":"hi"}], "model" : "m1" }'))
        assert.equal("m1", model(' \n{"stream":true,"n":1,"t":-0.5e3,"x":null,"y":false,"model":"m1"}\n'))
    end)

    it("ignores a model key inside nested objects and strings", function()
        assert.is_nil(model('{"messages":[{"model":"evil"}],"content":"\\"model\\": \\"x\\""}'))
        assert.equal("real", model('{"metadata":{"model":"nested"},"model":"real"}'))
    end)

    it("returns nil without an error when there is no model", function()
        local m, err = model('{"messages":[]}')
        assert.is_nil(m)
        assert.is_nil(err)
        assert.is_nil((model("{}")))
    end)

    it("decodes escapes in the model and in keys", function()
        assert.equal("Qwen/Qwen2.5", model('{"model":"Qwen\\/Qwen2.5"}'))
        assert.equal("m1", model('{"mod\\u0065l":"m1"}'))
    end)

    it("rejects a repeated model key, even spelled with escapes", function()
        local _, err = model('{"model":"a","x":1,"model":"b"}')
        assert.equal(400, err.status)
        assert.equal("duplicate_model", err.code)
        _, err = model('{"model":"a","mod\\u0065l":"b"}')
        assert.equal("duplicate_model", err.code)
    end)

    it("rejects a model that is not a non-empty string", function()
        for _, doc in ipairs({ '{"model":1}', '{"model":["a"]}', '{"model":null}', '{"model":{"a":1}}',
                               '{"model":""}' }) do
            local m, err = model(doc)
            assert.is_nil(m, doc)
            assert.equal(400, err.status, doc)
            assert.equal("invalid_model", err.code, doc)
        end
    end)

    it("rejects a huge model string before decoding it", function()
        local _, err = model('{"model":"' .. string.rep("a", 100000) .. '"}')
        assert.equal("invalid_model", err.code)
        _, err = model('{"model":"' .. string.rep("a", 257) .. '"}')
        assert.equal("invalid_model", err.code)
        assert.equal(string.rep("a", 256), (model('{"model":"' .. string.rep("a", 256) .. '"}')))
    end)

    it("rejects bodies that are not one JSON object", function()
        for _, doc in ipairs({ "", "[]", '"model"', "{", '{"model":"a"', '{"model":"a"}{}', '{"model":"a",}',
                               '{"a":[1,2}', '{"a":tru}', '{"a":"unterminated}', "{'model':'a'}",
                               '{"model" "a"}', '{"a":1 "b":2}', '{"a":"x"} trailing' }) do
            local m, err = model(doc)
            assert.is_nil(m, doc)
            assert.is_table(err, doc)
            assert.equal(400, err.status, doc)
        end
    end)

    it("rejects control characters and bad escapes in the model", function()
        local _, err = model('{"model":"a\nb"}')
        assert.equal(400, err.status)
        _, err = model('{"model":"a\\qb"}')
        assert.equal(400, err.status)
    end)

    it("limits nesting depth", function()
        local deep = string.rep("[", 500) .. string.rep("]", 500)
        local _, err = model('{"a":' .. deep .. '}')
        assert.equal(400, err.status)
    end)

    it("handles backslashes right before a closing quote", function()
        assert.equal("m", model('{"content":"ends with a backslash \\\\","model":"m"}'))
        assert.equal("m", model('{"content":"quote \\" inside","model":"m"}'))
    end)

    it("scans a large body", function()
        local big = '{"messages":[{"role":"user","content":"' .. string.rep("lorem ipsum \\n ", 80000)
            .. '"}],"model":"m"}'
        assert.equal("m", model(big))
    end)
end)

describe("gateway_body.read", function()
    it("reads the in-memory body", function()
        stub.reset({ body = '{"model":"a"}', var = { http_content_length = "13" } })
        local body = require "gateway_body"
        assert.equal('{"model":"a"}', body.read(1024))
    end)

    it("rejects a too large Content-Length before reading", function()
        local fake = stub.reset({ body = "x", var = { http_content_length = "5000" } })
        local body = require "gateway_body"
        local data, err = body.read(1024)
        assert.is_nil(data)
        assert.equal(413, err.status)
        assert.is_nil(fake.sent.body_read)
    end)

    it("falls back to the temp file nginx spilled the body to", function()
        local path = os.tmpname()
        stub.write_file(path, '{"model":"from-file"}')
        stub.reset({ body = nil, body_file = path, var = {} })
        local body = require "gateway_body"
        assert.equal('{"model":"from-file"}', body.read(1024))
        os.remove(path)
    end)

    it("caps a body read from its temp file too", function()
        local path = os.tmpname()
        stub.write_file(path, string.rep("x", 2048))
        stub.reset({ body = nil, body_file = path, var = {} })
        local body = require "gateway_body"
        local _, err = body.read(1024)
        assert.equal(413, err.status)
        os.remove(path)
    end)

    it("returns an empty string for an empty body", function()
        stub.reset({ body = nil, body_file = nil, var = {} })
        local body = require "gateway_body"
        assert.equal("", body.read(1024))
    end)
end)

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

-- A body as nginx hands it over: in memory, or spilled to a temp file.
local function open_body(text, where)
    local opts = { var = { http_content_length = tostring(#text) } }
    local path
    if where == "file" then
        path = os.tmpname()
        stub.write_file(path, text)
        opts.body_file = path
    else
        opts.body = text
    end
    stub.reset(opts)
    local body = require "gateway_body"
    local src, err = body.open(1024 * 1024 * 64)
    return body, src, err, path
end

local function scan_both(text, session_fields)
    local results = {}
    for _, where in ipairs({ "memory", "file" }) do
        local body, src, err, path = open_body(text, where)
        assert.is_nil(err)
        local fields, serr = body.scan(src, session_fields)
        local prefix = fields and body.prefix(src, fields, 4096)
        body.close(src)
        if path then
            os.remove(path)
        end
        results[where] = { fields = fields, err = serr, prefix = prefix }
    end
    return results.memory, results.file
end

describe("gateway_body.open", function()
    it("reads the in-memory body", function()
        local body, src = open_body('{"model":"a"}', "memory")
        assert.equal(13, src.size)
        assert.equal("a", body.scan(src).model)
    end)

    it("rejects a too large Content-Length before reading", function()
        local fake = stub.reset({ body = "x", var = { http_content_length = "5000" } })
        local body = require "gateway_body"
        local src, err = body.open(1024)
        assert.is_nil(src)
        assert.equal(413, err.status)
        assert.is_nil(fake.sent.body_read)
    end)

    it("scans the temp file nginx spilled the body to, through a fixed window", function()
        local body, src, _, path = open_body('{"model":"from-file"}', "file")
        assert.is_number(src.fd)
        assert.equal("from-file", body.scan(src).model)
        body.close(src)
        assert.is_nil(src.fd)
        os.remove(path)
    end)

    it("caps a body read from its temp file too (chunked uploads have no Content-Length)", function()
        local path = os.tmpname()
        stub.write_file(path, string.rep("x", 2048))
        stub.reset({ body = nil, body_file = path, var = {} })
        local body = require "gateway_body"
        local src, err = body.open(1024)
        assert.is_nil(src)
        assert.equal(413, err.status)
        os.remove(path)
    end)

    it("gives an empty source for an empty body", function()
        stub.reset({ body = nil, body_file = nil, var = {} })
        local body = require "gateway_body"
        local src = body.open(1024)
        assert.equal(0, src.size)
        assert.equal("invalid_json", select(2, body.scan(src)).code)
    end)
end)

describe("gateway_body.scan across window boundaries", function()
    local W = 65536

    it("finds the model after a prompt several windows long, in memory and in a file alike", function()
        local content = string.rep("lorem \\\"ipsum\\\" \\\\ \\n ", 20000)
        local text = '{"messages":[{"role":"system","content":"' .. content .. '"},{"role":"user","content":"hi"}],'
            .. '"stream":true,"model":"m"}'
        assert.is_true(#text > 4 * W)
        local mem, file = scan_both(text)
        assert.equal("m", mem.fields.model)
        assert.equal("m", file.fields.model)
        assert.is_true(file.fields.stream)
        assert.same(mem.fields.messages, file.fields.messages)
        assert.equal(mem.prefix, file.prefix)
        assert.equal(4096, #file.prefix)
    end)

    it("handles an escape, a quote and a key that straddle the window edge", function()
        for shift = -8, 8 do
            -- Put the interesting bytes around offset W by padding before them.
            local head = '{"pad":"'
            local filler = string.rep("a", W - #head + shift - 2)
            for _, tail in ipairs({ '\\\\","model":"m1"}', '\\"","model":"m1"}', '","mo\\u0064el":"m1"}',
                                    '", "model" : "m1" }' }) do
                local text = head .. filler .. tail
                local mem, file = scan_both(text)
                assert.equal("m1", mem.fields and mem.fields.model, "memory, shift " .. shift .. " " .. tail)
                assert.equal("m1", file.fields and file.fields.model, "file, shift " .. shift .. " " .. tail)
            end
        end
    end)

    it("reads literals, strings and any spacing, in the window and across its edge", function()
        -- skip_ws, skip_string and literal have loop-free common cases and looping slow ones.
        for _, ws in ipairs({ "", " ", "  ", "\n\t  \r" }) do
            local doc = table.concat({ "{", '"model"', ":", '"m"', ",", '"stream"', ":", "true", ",", '"a"', ":",
                                       "[", "null", ",", "false", ",", '"x\\"y"', ",", "1.5e3", "]", "}" }, ws)
            for shift = -6, 6 do
                local text = '{"pad":"' .. string.rep("a", W - 12 + shift) .. '",' .. doc:sub(2)
                local mem, file = scan_both(text)
                for where, r in pairs({ memory = mem, file = file }) do
                    local what = where .. ", shift " .. shift .. ", spacing " .. #ws
                    assert.equal("m", r.fields and r.fields.model, what)
                    assert.is_true(r.fields.stream, what)
                end
            end
            for _, bad in ipairs({ "tru", "nul", "fals", "trUe", "nulll" }) do
                local mem, file = scan_both((doc:gsub("true", bad, 1)))
                assert.equal(400, mem.err and mem.err.status, bad .. ", spacing " .. #ws)
                assert.equal(400, file.err and file.err.status, bad .. ", spacing " .. #ws)
            end
        end
    end)

    it("agrees with cjson on many generated bodies", function()
        local cjson = require "cjson"
        math.randomseed(7)
        local function random_value(depth)
            local r = math.random(1, depth > 3 and 4 or 6)
            if r == 1 then
                return math.random(-1000, 1000) / 8
            elseif r == 2 then
                local chars = { "a", "\\", '"', "\n", "é", "{", "}", "[", "]", ",", ":", " " }
                local out = {}
                for _ = 1, math.random(0, 40) do
                    out[#out + 1] = chars[math.random(#chars)]
                end
                return table.concat(out)
            elseif r == 3 then
                return math.random() < 0.5
            elseif r == 4 then
                return string.rep("x", math.random(0, 3000))
            elseif r == 5 then
                local t = {}
                for k = 1, math.random(1, 4) do
                    t[k] = random_value(depth + 1)
                end
                return t
            end
            local t = {}
            for k = 1, math.random(1, 4) do
                t["k" .. k] = random_value(depth + 1)
            end
            return t
        end
        for n = 1, 60 do
            local doc = { pad = string.rep("p", math.random(0, 2 * W)), messages = { random_value(0) },
                          model = "model-" .. n, user = "u" .. n }
            local text = cjson.encode(doc)
            local mem, file = scan_both(text, { user = true })
            assert.equal(doc.model, mem.fields.model)
            assert.equal(doc.model, file.fields.model)
            assert.equal(doc.user, file.fields.sessions.user)
            assert.equal(mem.prefix, file.prefix)
        end
    end)

    it("rejects the same bad bodies from a file as from memory", function()
        for _, doc in ipairs({ '{"model":"a"', '{"a":[1,2}', '{"a":"' .. string.rep("x", 70000), '{"a":1} x',
                               '{"a":' .. string.rep("[", 500) .. string.rep("]", 500) .. '}' }) do
            local mem, file = scan_both(doc)
            assert.equal(400, mem.err.status, doc:sub(1, 30))
            assert.equal(400, file.err.status, doc:sub(1, 30))
        end
    end)
end)

describe("gateway_body.prefix", function()
    local function prefix(text, limit, session_fields)
        stub.reset()
        local body = require "gateway_body"
        local src = body.from_string(text)
        local fields = assert(body.scan(src, session_fields))
        return body.prefix(src, fields, limit or 4096), fields
    end

    it("takes the messages up to and including the first user message", function()
        local turn1 = '{"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":"Q1"}]}'
        local turn2 = '{"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":"Q1"},'
            .. '{"role":"assistant","content":"A1"},{"role":"user","content":"Q2"}]}'
        assert.equal('[{"role":"system","content":"S"},{"role":"user","content":"Q1"}', prefix(turn1))
        assert.equal(prefix(turn1), prefix(turn2))
    end)

    it("reads the role wherever it is in the message and however it is spaced", function()
        local p = prefix('{"messages":[ {"content":"S", "role" : "system"} , {"content":"Q","role":"user"}, '
            .. '{"role":"user","content":"later"}]}')
        assert.equal('[ {"content":"S", "role" : "system"} , {"content":"Q","role":"user"}', p)
    end)

    it("is cut at the limit", function()
        local p = prefix('{"messages":[{"role":"system","content":"' .. string.rep("s", 5000) .. '"}]}', 100)
        assert.equal(100, #p)
    end)

    it("falls back to prompt and input, and to nothing", function()
        assert.equal('"Once upon"', prefix('{"model":"m","prompt":"Once upon"}'))
        assert.equal('["a","b"]', prefix('{"input":["a","b"]}'))
        assert.is_nil(prefix('{"model":"m"}'))
    end)

    it("takes the session field only as a short non-empty string", function()
        local _, f = prefix('{"user":"alice","model":"m","session":"s1"}', nil, { user = true, session = true })
        assert.same({ user = "alice", session = "s1" }, f.sessions)
        _, f = prefix('{"user":42}', nil, { user = true })
        assert.is_nil(f.sessions)
        _, f = prefix('{"user":"' .. string.rep("u", 2000) .. '"}', nil, { user = true })
        assert.is_nil(f.sessions)
        _, f = prefix('{"user":"alice"}')
        assert.is_nil(f.sessions)
    end)
end)

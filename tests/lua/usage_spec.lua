local stub = require "ngx_stub"

describe("gateway_usage", function()
    local usage
    before_each(function()
        stub.reset()
        usage = require "gateway_usage"
    end)

    it("reads the usage of a plain answer, the Responses API's too", function()
        assert.same({ 12, 34 }, { usage.parse('{"choices":[],"usage":{"prompt_tokens":12,"total_tokens":46,'
            .. '"completion_tokens":34},"x":null}') })
        assert.same({ 5, 7 }, { usage.parse('{"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}') })
        assert.is_nil(usage.parse('{"choices":[],"usage":null}'))
        assert.is_nil(usage.parse('{"choices":[]}'))
        -- spaces, detail objects whose names start alike, and a quoted "usage" inside content
        assert.same({ 3, 4 }, { usage.parse('{"content":"a \\"usage\\": {x}","usage" : { "prompt_tokens_details":'
            .. '{"cached_tokens":1},"prompt_tokens" :3, "input_tokens_details":null,"completion_tokens": 4}}') })
        assert.same({ 8, 0 }, { usage.parse('{"usage":{"prompt_tokens":8}}') })
        assert.is_nil(usage.parse('{"usage":{"completion_tokens":8}}'))
    end)

    it("takes the stream's last usage and the time of its first content, passing every chunk on", function()
        local fake = stub.reset()
        usage = require "gateway_usage"
        local ctx = {}
        usage.start(ctx, true, true)
        local u = ctx.usage
        fake.clock = 1000.5
        usage.chunk(u, 'data: {"choices":[{"delta":{"role":"assistant","content":""}}],"usage":null}\n\n')
        assert.is_nil(u.first)
        fake.clock = 1000.75
        usage.chunk(u, 'data: {"choices":[{"delta":{"content":"Hel"}}],"usage":null}\n\n')
        assert.equal(1000.75, u.first)
        for _ = 1, 200 do
            usage.chunk(u, 'data: {"choices":[{"delta":{"content":"lo"}}],"usage":null}\n\n')
        end
        usage.chunk(u, 'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":201}}\n\ndata: [DONE]\n\n')
        assert.is_true(u.size < 2 * usage.TAIL)
        local prompt, completion, ttft, tpot = usage.finish(u, 1000.0, 1002.75)
        assert.same({ 9, 201 }, { prompt, completion })
        assert.near(0.75, ttft, 1e-9)
        assert.near(2.0 / 200, tpot, 1e-9)
        assert.equal(203, u.events)
    end)

    it("gives no usage for a stream without it, and estimates tokens for a budget", function()
        local ctx = {}
        usage.start(ctx, true, true)
        usage.chunk(ctx.usage, 'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n')
        assert.is_nil((usage.finish(ctx.usage, 0, 1)))
        assert.equal(1 + 100, usage.estimate(ctx.usage, 400))
    end)
end)

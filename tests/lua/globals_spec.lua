local stub = require "ngx_stub"

describe("every gateway module", function()
    it("loads without writing a global and returns its module table", function()
        stub.reset()
        local before = {}
        for k in pairs(_G) do before[k] = true end
        local dir = "charts/api-gateway/files/lua"
        local listing = assert(io.popen("ls " .. dir))
        local count = 0
        for file in listing:lines() do
            local name = file:match("^(gateway_[%w_]+)%.lua$")
            if name then
                local module = require(name)
                assert.is_table(module, name)
                count = count + 1
            end
        end
        listing:close()
        assert.is_true(count >= 10)
        for k in pairs(_G) do
            assert.is_true(before[k] ~= nil, "global written: " .. tostring(k))
        end
    end)
end)

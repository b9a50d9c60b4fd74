local stub = require "ngx_stub"

-- Wire-format helpers for building answers the way a DNS server writes them.
local function u16(n)
    return string.char(math.floor(n / 256), n % 256)
end

local function name(text)
    local out = {}
    for label in text:gmatch("[^.]+") do
        out[#out + 1] = string.char(#label) .. label
    end
    return table.concat(out) .. "\0"
end

local function record(owner, rtype, rdata)
    return owner .. u16(rtype) .. u16(1) .. "\0\0\0\5" .. u16(#rdata) .. rdata
end

local function answer(id, flags, question, answers, additional)
    return u16(id) .. u16(flags) .. u16(1) .. u16(#answers) .. u16(0) .. u16(#additional)
        .. question .. table.concat(answers) .. table.concat(additional)
end

describe("gateway_dns", function()
    local dns
    before_each(function()
        stub.reset()
        dns = require "gateway_dns"
    end)

    it("writes a recursive query with an EDNS0 record", function()
        local q = dns.query(0x1234, "_http._tcp.vllm-a-pods.llm.svc.cluster.local", dns.TYPE_SRV)
        assert.equal("\18\52", q:sub(1, 2))
        assert.equal("\1\0", q:sub(3, 4)) -- RD
        assert.equal(u16(1) .. u16(0) .. u16(0) .. u16(1), q:sub(5, 12))
        local qname = name("_http._tcp.vllm-a-pods.llm.svc.cluster.local")
        assert.equal(qname .. u16(33) .. u16(1), q:sub(13, 12 + #qname + 4))
        assert.equal("\0" .. u16(41) .. u16(4096), q:sub(13 + #qname + 4, 13 + #qname + 8))
    end)

    it("reads SRV answers and their A records, names compressed as servers write them", function()
        local qname = name("_http._tcp.m-pods.ns.svc.cluster.local")
        local question = qname .. u16(33) .. u16(1)
        -- Owner names point back at the question (offset 12); targets are written once and pointed to.
        local target1 = name("10-0-0-1.m-pods.ns.svc.cluster.local")
        local srv1 = record("\192\12", 33, u16(0) .. u16(50) .. u16(8000) .. target1)
        local srv2 = record("\192\12", 33, u16(0) .. u16(50) .. u16(8001) .. name("10-0-0-2.m-pods.ns.svc.cluster.local"))
        local target1_offset = 12 + #question + 12 + 6
        local a1 = record("\192" .. string.char(target1_offset), 1, "\10\0\0\1")
        local packet = answer(7, 0x8180, question, { srv1, srv2 }, { a1 })
        local parsed = assert(dns.parse(packet, 7))
        assert.equal(0, parsed.rcode)
        assert.equal(3, #parsed.records)
        assert.equal(8000, parsed.records[1].port)
        assert.equal("10-0-0-1.m-pods.ns.svc.cluster.local", parsed.records[1].target)
        assert.equal("_http._tcp.m-pods.ns.svc.cluster.local", parsed.records[1].name)
        assert.equal("10.0.0.1", parsed.records[3].address)
        assert.equal("10-0-0-1.m-pods.ns.svc.cluster.local", parsed.records[3].name)
    end)

    it("tells truncated answers, missing names and foreign ids apart", function()
        local question = name("x.example") .. u16(1) .. u16(1)
        assert.is_true(assert(dns.parse(answer(1, 0x8380, question, {}, {}), 1)).truncated)
        assert.equal(3, assert(dns.parse(answer(1, 0x8183, question, {}, {}), 1)).rcode)
        local _, err = dns.parse(answer(2, 0x8180, question, {}, {}), 1)
        assert.matches("id", err)
    end)

    it("refuses answers that point in a loop or run past their end", function()
        local question = name("x.example") .. u16(1) .. u16(1)
        local looped = record("\192\12", 1, "\1\2\3\4")
        local packet = answer(1, 0x8180, "\192\12" .. u16(1) .. u16(1), { looped }, {})
        assert.is_nil((dns.parse(packet, 1)))
        local short = answer(1, 0x8180, question, { record("\192\12", 1, "\1\2\3\4") }, {})
        assert.is_nil((dns.parse(short:sub(1, #short - 2), 1)))
        assert.is_nil((dns.parse("\0\1", 1)))
    end)

    it("takes servers from the settings, else from resolv.conf", function()
        assert.same({ { host = "127.0.0.1", port = 5353 }, { host = "10.96.0.10", port = 53 } },
            dns.servers({ "127.0.0.1:5353", "10.96.0.10" }))
        local path = os.tmpname()
        stub.write_file(path, "search llm.svc.cluster.local svc.cluster.local\nnameserver 198.18.0.10\n"
            .. "nameserver fd00::10\noptions ndots:5\n")
        assert.same({ { host = "198.18.0.10", port = 53 } }, dns.servers({}, path))
        os.remove(path)
    end)
end)

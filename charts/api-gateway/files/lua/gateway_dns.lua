-- A small DNS client for endpoint discovery: SRV and A queries over UDP with
-- EDNS0 (answers up to 4096 bytes), retried over TCP when the answer is still
-- truncated. Debian's nginx Lua packages ship no lua-resty-dns, and the
-- discovery timer needs only this much. Runs in timers (cosockets), never in
-- the request path.
local ngx = ngx
local bit = require "bit"
local band = bit.band
local rshift = bit.rshift
local byte = string.byte
local char = string.char
local concat = table.concat
local gmatch = string.gmatch
local match = string.match
local sub = string.sub
local random = math.random
local tonumber = tonumber
local io_open = io.open

local _M = { TYPE_A = 1, TYPE_SRV = 33 }

local TYPE_OPT = 41
local CLASS_IN = 1
local UDP_SIZE = 4096
local RCODE_NXDOMAIN = 3

local function u16(n)
    return char(rshift(n, 8), band(n, 0xff))
end

local function read_u16(s, i)
    local a, b = byte(s, i, i + 1)
    return a * 256 + b
end

-- The query for one name and type, with an EDNS0 OPT record.
function _M.query(id, name, qtype)
    local labels = {}
    for label in gmatch(name, "[^.]+") do
        labels[#labels + 1] = char(#label) .. label
    end
    return concat({
        u16(id), u16(0x0100), u16(1), u16(0), u16(0), u16(1), -- id, RD, 1 question, 1 additional
        concat(labels), "\0", u16(qtype), u16(CLASS_IN),
        "\0", u16(TYPE_OPT), u16(UDP_SIZE), "\0\0\0\0", u16(0), -- OPT: root name, UDP size, no options
    })
end

-- A (possibly compressed) name at i; returns it and the index after it in the record.
local function read_name(s, i)
    local labels, after, jumps = {}, nil, 0
    while true do
        local len = byte(s, i)
        if not len then
            return nil
        end
        if len == 0 then
            return concat(labels, "."), after or i + 1
        elseif band(len, 0xc0) == 0xc0 then
            jumps = jumps + 1
            if jumps > 32 or not byte(s, i + 1) then
                return nil
            end
            after = after or i + 2
            i = band(len, 0x3f) * 256 + byte(s, i + 1) + 1
        else
            labels[#labels + 1] = sub(s, i + 1, i + len)
            i = i + len + 1
        end
    end
end

-- Parses an answer. Returns { rcode, truncated, records = { {name, type, ttl, ...} } }
-- (answer and additional sections together: SRV answers carry their targets'
-- A records there), or nil, err.
function _M.parse(s, id)
    if #s < 12 then
        return nil, "short answer"
    end
    if read_u16(s, 1) ~= id then
        return nil, "answer id mismatch"
    end
    local flags = read_u16(s, 3)
    local out = { rcode = band(flags, 0x0f), truncated = band(flags, 0x0200) ~= 0, records = {} }
    local qd, an, ns, ar = read_u16(s, 5), read_u16(s, 7), read_u16(s, 9), read_u16(s, 11)
    local i = 13
    for _ = 1, qd do
        local _, after = read_name(s, i)
        if not after then
            return nil, "bad question"
        end
        i = after + 4
    end
    for n = 1, an + ns + ar do
        local name, after = read_name(s, i)
        if not after or #s < after + 9 then
            return nil, "bad record"
        end
        local rtype, ttl = read_u16(s, after), read_u16(s, after + 4) * 65536 + read_u16(s, after + 6)
        local rdlen = read_u16(s, after + 8)
        local rdata = after + 10
        if #s < rdata + rdlen - 1 then
            return nil, "record past the end"
        end
        local in_authority = n > an and n <= an + ns
        if not in_authority and rtype == _M.TYPE_A and rdlen == 4 then
            local a, b, c, d = byte(s, rdata, rdata + 3)
            out.records[#out.records + 1] = { name = name, type = rtype, ttl = ttl,
                                              address = a .. "." .. b .. "." .. c .. "." .. d }
        elseif not in_authority and rtype == _M.TYPE_SRV and rdlen >= 7 then
            local target = read_name(s, rdata + 6)
            if not target then
                return nil, "bad SRV target"
            end
            out.records[#out.records + 1] = { name = name, type = rtype, ttl = ttl,
                                              priority = read_u16(s, rdata), weight = read_u16(s, rdata + 2),
                                              port = read_u16(s, rdata + 4), target = target }
        end
        i = rdata + rdlen
    end
    return out
end

local function exchange_udp(server, packet, timeout_ms)
    local sock = ngx.socket.udp()
    sock:settimeout(timeout_ms)
    local ok, err = sock:setpeername(server.host, server.port)
    if not ok then
        return nil, err
    end
    ok, err = sock:send(packet)
    if not ok then
        sock:close()
        return nil, err
    end
    local data
    data, err = sock:receive(UDP_SIZE)
    sock:close()
    return data, err
end

local function exchange_tcp(server, packet, timeout_ms)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout_ms)
    local ok, err = sock:connect(server.host, server.port)
    if not ok then
        return nil, err
    end
    ok, err = sock:send(u16(#packet) .. packet)
    if not ok then
        sock:close()
        return nil, err
    end
    local len
    len, err = sock:receive(2)
    if not len then
        sock:close()
        return nil, err
    end
    local data
    data, err = sock:receive(read_u16(len, 1))
    sock:close()
    return data, err
end

-- Records of one query, asking each server in turn. Returns the parsed
-- answer (rcode 3: the name does not exist), or nil, err when none answered.
function _M.resolve(servers, name, qtype, timeout_ms)
    local last_err = "no DNS server configured"
    for _, server in ipairs(servers) do
        local id = random(0, 65535)
        local packet = _M.query(id, name, qtype)
        local data, err = exchange_udp(server, packet, timeout_ms)
        local answer
        if data then
            answer, err = _M.parse(data, id)
            if answer and answer.truncated then
                data, err = exchange_tcp(server, packet, timeout_ms)
                answer = nil
                if data then
                    answer, err = _M.parse(data, id)
                end
            end
        end
        if answer and (answer.rcode == 0 or answer.rcode == RCODE_NXDOMAIN) then
            return answer
        end
        last_err = (server.host .. ":" .. server.port .. ": ")
            .. (err or ("answer code " .. (answer and answer.rcode or "?")))
    end
    return nil, last_err
end

-- The endpoints behind an SRV name: { {address, port}, ... } sorted, {} when
-- the name does not exist or lists nothing, or nil, err.
function _M.srv_endpoints(servers, name, timeout_ms)
    local answer, err = _M.resolve(servers, name, _M.TYPE_SRV, timeout_ms)
    if not answer then
        return nil, err
    end
    local addresses, srvs = {}, {}
    for _, r in ipairs(answer.records) do
        if r.type == _M.TYPE_A then
            local list = addresses[r.name] or {}
            list[#list + 1] = r.address
            addresses[r.name] = list
        elseif r.type == _M.TYPE_SRV then
            srvs[#srvs + 1] = r
        end
    end
    local out, seen = {}, {}
    for _, srv in ipairs(srvs) do
        local list = addresses[srv.target]
        if not list then
            -- The server left the target's address out: ask for it.
            local a
            a, err = _M.resolve(servers, srv.target, _M.TYPE_A, timeout_ms)
            if not a then
                return nil, err
            end
            list = {}
            for _, r in ipairs(a.records) do
                if r.type == _M.TYPE_A then
                    list[#list + 1] = r.address
                end
            end
        end
        for _, address in ipairs(list) do
            local key = address .. ":" .. srv.port
            if not seen[key] then
                seen[key] = true
                out[#out + 1] = { address = address, port = srv.port }
            end
        end
    end
    return out
end

-- The A records of a name as endpoints on `port`, as srv_endpoints.
function _M.a_endpoints(servers, name, port, timeout_ms)
    local answer, err = _M.resolve(servers, name, _M.TYPE_A, timeout_ms)
    if not answer then
        return nil, err
    end
    local out, seen = {}, {}
    for _, r in ipairs(answer.records) do
        if r.type == _M.TYPE_A and not seen[r.address] then
            seen[r.address] = true
            out[#out + 1] = { address = r.address, port = port }
        end
    end
    return out
end

-- "host[:port]" entries (IPv4) into servers; the nameservers of resolv.conf when empty.
function _M.servers(list, resolv_conf)
    local out = {}
    for _, entry in ipairs(list or {}) do
        local host, port = match(entry, "^([%d.]+):?(%d*)$")
        if host then
            out[#out + 1] = { host = host, port = tonumber(port) or 53 }
        end
    end
    if #out > 0 then
        return out
    end
    local file = io_open(resolv_conf or "/etc/resolv.conf", "r")
    if not file then
        return out
    end
    for line in file:lines() do
        local host = match(line, "^%s*nameserver%s+([%d.]+)%s*$")
        if host then
            out[#out + 1] = { host = host, port = 53 }
        end
    end
    file:close()
    return out
end

return _M

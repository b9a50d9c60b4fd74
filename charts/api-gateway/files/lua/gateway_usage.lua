-- Token usage of each answered request, read from the response's own `usage`
-- object without holding the response back: the body filter passes every chunk
-- on at once and keeps only the last few KiB (the usage object of a plain
-- answer is near its end; a stream's is in its last event, sent when the
-- client asked with stream_options.include_usage). For streams it also notes
-- when the first content arrived (time to first token). At the end: token
-- counters per model and key, the OpenTelemetry GenAI histograms, and the
-- charge of a key's token budget. A stream that carries no usage is counted as
-- such, never as zero tokens; a token budget is then charged an estimate (the
-- content events received and a quarter of the request's bytes).
local ngx = ngx
local concat = table.concat
local find = string.find
local match = string.match
local sub = string.sub
local tonumber = tonumber

local _M = { TAIL = 4096 }

-- Access phase: what the body filter and the log phase need.
function _M.start(ctx, stream, count_events)
    ctx.usage = { stream = stream == true, chunks = {}, size = 0, events = count_events and 0 or nil }
end

-- Body filter: one chunk of the answer (ngx.arg[1]), passed on unchanged.
function _M.chunk(u, chunk)
    if chunk == "" then
        return
    end
    if u.stream then
        if not u.first and (find(chunk, '"content"%s*:%s*"[^"]') or find(chunk, '"text"%s*:%s*"[^"]')) then
            u.first = ngx.now()
        end
        if u.events then
            local i = 1
            while true do
                local j = find(chunk, "data: {", i, true)
                if not j then
                    break
                end
                u.events = u.events + 1
                i = j + 7
            end
        end
    end
    local chunks = u.chunks
    chunks[#chunks + 1] = chunk
    u.size = u.size + #chunk
    -- Keep just enough of the end: drop whole chunks from the front.
    while #chunks > 1 and u.size - #chunks[1] >= _M.TAIL do
        u.size = u.size - #chunks[1]
        table.remove(chunks, 1)
    end
end

-- The number after `"name":` in object, or nil.
local function number_after(object, name)
    local i = find(object, name, 1, true)
    return i and tonumber(match(object, "^%s*:%s*(%d+)", i + #name))
end

-- `"usage"` at i is followed by an object: where its value starts, else nil.
local function object_at(text, i)
    return find(text, "^%s*:%s*{", i + 7) and i + 7 or nil
end

-- The prompt and completion tokens of the last usage object in text, or nil.
-- Chat/completions name them prompt_tokens/completion_tokens, the Responses API
-- input_tokens/output_tokens. Plain finds, then a pattern anchored where one
-- hit: a stream's tail holds a `"usage":null` per event, and an unanchored
-- pattern tries every byte (4x slower on a 4 KiB tail, measured). A plain
-- answer has one `"usage"`: found without a loop, so LuaJIT can compile the
-- log phase through here (a loop of one or two turns aborts its trace).
function _M.parse(text)
    local i = find(text, '"usage"', 1, true)
    if not i then
        return nil
    end
    local last = object_at(text, i)
    i = find(text, '"usage"', i + 7, true)
    while i do -- a stream's tail: the last usage that is an object
        last = object_at(text, i) or last
        i = find(text, '"usage"', i + 7, true)
    end
    if not last then
        return nil
    end
    local object = sub(text, last)
    local prompt = number_after(object, '"prompt_tokens"') or number_after(object, '"input_tokens"')
    if not prompt then
        return nil
    end
    return prompt, number_after(object, '"completion_tokens"') or number_after(object, '"output_tokens"') or 0
end

-- Log phase: { prompt, completion } from the answer, or nil (no usage), and
-- the time to first token and per output token (streams) in seconds.
function _M.finish(u, start_time, now)
    local chunks = u.chunks
    local prompt, completion = _M.parse(#chunks == 1 and chunks[1] or concat(chunks))
    local ttft, tpot
    if u.first then
        ttft = u.first - start_time
        if completion and completion > 1 then
            tpot = (now - u.first) / (completion - 1)
        end
    end
    return prompt, completion, ttft, tpot
end

-- Tokens to charge a budget when the answer said nothing: the content events
-- of a stream, and a quarter of the request's bytes as the prompt.
function _M.estimate(u, request_bytes)
    return (u.events or 0) + math.floor((tonumber(request_bytes) or 0) / 4)
end

return _M

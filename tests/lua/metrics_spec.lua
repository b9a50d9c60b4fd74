local stub = require "ngx_stub"

describe("gateway_metrics", function()
    it("counts requests per model and status, durations and time to first byte", function()
        local fake = stub.reset({ var = { gateway_model = "a", bytes_sent = "120", gateway_ttfb = "" } })
        local metrics = require "gateway_metrics"
        local ctx = {}
        fake.now = function() return 1000.03 end
        metrics.first_byte(ctx)
        assert.equal("0.030", fake.var.gateway_ttfb)
        assert.near(0.03, ctx.ttfb, 1e-9)
        fake.now = function() return 1000.12 end
        metrics.log("a", 200, ctx.ttfb)
        metrics.log("a", 200, ctx.ttfb)
        -- Without arguments (the other locations): the variables and ngx.status.
        fake.var.gateway_model = ""
        fake.status = 404
        metrics.log()
        metrics.flush()

        local entries = fake.shared.gateway_metrics.data
        local text = metrics.render(entries, { a = { ready = true }, b = { ready = false }, c = {} })
        assert.matches('gateway_requests_total{model="a",status="200"} 2', text, 1, true)
        assert.matches('gateway_requests_total{model="",status="404"} 1', text, 1, true)
        assert.matches('gateway_response_bytes_total{model="a"} 240', text, 1, true)
        assert.matches('gateway_request_duration_seconds_bucket{model="a",le="0.1"} 0', text, 1, true)
        assert.matches('gateway_request_duration_seconds_bucket{model="a",le="0.25"} 2', text, 1, true)
        assert.matches('gateway_request_duration_seconds_bucket{model="a",le="+Inf"} 2', text, 1, true)
        assert.matches('gateway_request_duration_seconds_count{model="a"} 2', text, 1, true)
        assert.matches('gateway_request_duration_seconds_sum{model="a"} 0.240000', text, 1, true)
        assert.matches('gateway_time_to_first_byte_seconds_sum{model="a"} 0.060000', text, 1, true)
        assert.matches('gateway_time_to_first_byte_seconds_bucket{model="a",le="0.05"} 2', text, 1, true)
        assert.matches('gateway_time_to_first_byte_seconds_count{model="a"} 2', text, 1, true)
        assert.is_nil(text:find('gateway_time_to_first_byte_seconds_count{model=""}', 1, true))
        assert.matches('gateway_model_ready{model="a"} 1', text, 1, true)
        assert.matches('gateway_model_ready{model="b"} 0', text, 1, true)
        assert.matches('gateway_model_ready{model="c"} -1', text, 1, true)
        assert.matches("# TYPE gateway_request_duration_seconds histogram", text, 1, true)
    end)

    it("counts per endpoint, balancer decisions, replicas and in-flight requests", function()
        local fake = stub.reset({ var = { gateway_model = "a", bytes_sent = "1", upstream_status = "502, 200" } })
        local metrics = require "gateway_metrics"
        metrics.log("a", 200, nil, "10.0.0.1:8000")
        metrics.log("a", 404, nil, "10.0.0.2:8000", 404) -- the pod's status, as the router knows it
        metrics.decision({ name = "a" }, "affinity")
        metrics.decision({ name = "a" }, "spill")
        metrics.upstream_failure({ name = "a" }, { id = "10.0.0.9:8000" })
        metrics.flush()
        local text = metrics.render(fake.shared.gateway_metrics.data, {
            a = { ready = true, replicas = { 2, 3 }, inflight = { ["10.0.0.1:8000"] = 4 } } })
        -- The status of the last attempt counts.
        assert.matches('gateway_upstream_requests_total{model="a",endpoint="10.0.0.1:8000",status="200"} 1', text, 1,
            true)
        assert.matches('gateway_upstream_requests_total{model="a",endpoint="10.0.0.2:8000",status="404"} 1', text, 1,
            true)
        assert.matches('gateway_upstream_failures_total{model="a",endpoint="10.0.0.9:8000"} 1', text, 1, true)
        assert.matches('gateway_balancer_decisions_total{model="a",decision="affinity"} 1', text, 1, true)
        assert.matches('gateway_balancer_decisions_total{model="a",decision="spill"} 1', text, 1, true)
        assert.matches('gateway_model_replicas{model="a",state="ready"} 2', text, 1, true)
        assert.matches('gateway_model_replicas{model="a",state="total"} 3', text, 1, true)
        assert.matches('gateway_upstream_in_flight{model="a",endpoint="10.0.0.1:8000"} 4', text, 1, true)
    end)

    it("buckets are cumulative and end with +Inf", function()
        local fake = stub.reset({ var = { gateway_model = "m", bytes_sent = "1" } })
        local metrics = require "gateway_metrics"
        fake.now = function() return 6000 end
        metrics.log("m", 200)
        metrics.flush()
        local text = metrics.render(fake.shared.gateway_metrics.data, {})
        assert.matches('gateway_request_duration_seconds_bucket{model="m",le="3600"} 0', text, 1, true)
        assert.matches('gateway_request_duration_seconds_bucket{model="m",le="+Inf"} 1', text, 1, true)
    end)

    it("adds a worker's counts to the shared dict only when it flushes, and each count once", function()
        local fake = stub.reset({ var = { gateway_model = "a", bytes_sent = "10" } })
        local metrics = require "gateway_metrics"
        local dict = fake.shared.gateway_metrics
        metrics.log("a", 200)
        metrics.decision({ name = "a" }, "pick")
        assert.is_nil(dict:get("r\001a\001200"))
        metrics.flush()
        assert.equal(1, dict:get("r\001a\001200"))
        assert.equal(10, dict:get("b\001a"))
        assert.equal(1, dict:get("c\001a\001pick"))
        metrics.flush() -- nothing new: nothing added twice
        metrics.log("a", 200)
        metrics.flush()
        assert.equal(2, dict:get("r\001a\001200"))
        assert.equal(20, dict:get("b\001a"))
    end)

    it("names a full dict in the error log when a flush cannot count", function()
        local fake = stub.reset({ var = { gateway_model = "a", bytes_sent = "1" } })
        local metrics = require "gateway_metrics"
        fake.shared.gateway_metrics.incr = function() return nil, "no memory" end
        metrics.log("a", 200)
        metrics.flush()
        assert.equal(1, #fake.sent.logs)
        assert.matches("series not counted (no memory); raise metrics.dictSize", fake.sent.logs[1], 1, true)
    end)
end)

describe("gateway_health.classify", function()
    it("tells ready, loading and unreachable apart", function()
        stub.reset()
        local health = require "gateway_health"
        assert.equal("ready", health.classify(200))
        assert.equal("loading", health.classify(503))
        assert.equal("loading", health.classify(404))
        assert.equal("unreachable", health.classify(502))
        assert.equal("unreachable", health.classify(504))
        assert.equal("unreachable", health.classify(nil))
    end)
end)

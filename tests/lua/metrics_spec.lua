local stub = require "ngx_stub"

describe("gateway_metrics", function()
    it("counts requests per model and status, durations and time to first byte", function()
        local fake = stub.reset({ var = { gateway_model = "a", status = "200", bytes_sent = "120",
                                          request_time = "0.120", gateway_ttfb = "" } })
        local metrics = require "gateway_metrics"
        fake.now = function() return 1000.03 end
        metrics.first_byte()
        assert.equal("0.030", fake.var.gateway_ttfb)
        fake.now = function() return 1000.09 end
        metrics.first_byte() -- later chunks keep the first time
        assert.equal("0.030", fake.var.gateway_ttfb)
        metrics.log()
        metrics.log()
        fake.var.gateway_model = ""
        fake.var.status = "404"
        fake.var.gateway_ttfb = ""
        metrics.log()

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
        assert.matches('gateway_time_to_first_byte_seconds_bucket{model="a",le="0.05"} 2', text, 1, true)
        assert.matches('gateway_time_to_first_byte_seconds_count{model="a"} 2', text, 1, true)
        assert.is_nil(text:find('gateway_time_to_first_byte_seconds_count{model=""}', 1, true))
        assert.matches('gateway_model_ready{model="a"} 1', text, 1, true)
        assert.matches('gateway_model_ready{model="b"} 0', text, 1, true)
        assert.matches('gateway_model_ready{model="c"} -1', text, 1, true)
        assert.matches("# TYPE gateway_request_duration_seconds histogram", text, 1, true)
    end)

    it("counts per endpoint, balancer decisions, replicas and in-flight requests", function()
        local fake = stub.reset({ var = { gateway_model = "a", status = "200", bytes_sent = "1", request_time = "0.1",
                                          gateway_ttfb = "", gateway_endpoint = "10.0.0.1:8000",
                                          upstream_status = "502, 200" } })
        local metrics = require "gateway_metrics"
        metrics.log()
        metrics.decision({ name = "a" }, "affinity")
        metrics.decision({ name = "a" }, "spill")
        metrics.upstream_failure({ name = "a" }, { id = "10.0.0.9:8000" })
        local text = metrics.render(fake.shared.gateway_metrics.data, {
            a = { ready = true, replicas = { 2, 3 }, inflight = { ["10.0.0.1:8000"] = 4 } } })
        -- The status of the last attempt counts.
        assert.matches('gateway_upstream_requests_total{model="a",endpoint="10.0.0.1:8000",status="200"} 1', text, 1,
            true)
        assert.matches('gateway_upstream_failures_total{model="a",endpoint="10.0.0.9:8000"} 1', text, 1, true)
        assert.matches('gateway_balancer_decisions_total{model="a",decision="affinity"} 1', text, 1, true)
        assert.matches('gateway_balancer_decisions_total{model="a",decision="spill"} 1', text, 1, true)
        assert.matches('gateway_model_replicas{model="a",state="ready"} 2', text, 1, true)
        assert.matches('gateway_model_replicas{model="a",state="total"} 3', text, 1, true)
        assert.matches('gateway_upstream_in_flight{model="a",endpoint="10.0.0.1:8000"} 4', text, 1, true)
    end)

    it("buckets are cumulative and end with +Inf", function()
        local fake = stub.reset({ var = { gateway_model = "m", status = "200", bytes_sent = "1",
                                          request_time = "5000", gateway_ttfb = "" } })
        local metrics = require "gateway_metrics"
        metrics.log()
        local text = metrics.render(fake.shared.gateway_metrics.data, {})
        assert.matches('gateway_request_duration_seconds_bucket{model="m",le="3600"} 0', text, 1, true)
        assert.matches('gateway_request_duration_seconds_bucket{model="m",le="+Inf"} 1', text, 1, true)
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

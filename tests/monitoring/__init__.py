"""The api-gateway's Grafana dashboard and PrometheusRule against real tools and real exporters."""

"""The ablation profiler's edits still apply to the chart's nginx.conf; part of `nox -s unit`."""

from __future__ import annotations


def test_ablation_edits_apply_to_the_rendered_gateway_config():
    """bench.profilers.ablation edits copies of the chart's nginx.conf; a chart change that breaks an edit must fail here."""
    from bench.profilers.ablation import VARIANTS, timed_conf, variant_conf
    from gateway import runner

    manifests = runner.render({"paths": {"configDir": "/x/config", "tempDir": "/x/tmp", "secretsDir": "/x/s"}})
    cm = next(m for m in manifests if m["kind"] == "ConfigMap" and "nginx.conf" in (m.get("data") or {}))
    conf = cm["data"]["nginx.conf"]
    for name in VARIANTS:
        out = variant_conf(conf, name, "gateway-model-alpha")
        assert (out == conf) == (name == "as-rendered"), name
    lean = variant_conf(conf, "lean", "gateway-model-alpha")
    assert "log_by_lua" not in lean and "router.access" not in lean and "body_filter_by_lua" not in lean
    timed = timed_conf(conf)
    assert "X-Bench-Access-Us" in timed and "bench-log-us=" in timed and "bench-body-filter-us=" in timed

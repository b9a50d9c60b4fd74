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
    assert timed.count("bench-phases") == 1 and '"gateway_router", "access"' in timed


def test_every_timed_part_is_a_function_of_the_gateways_lua():
    """The phase timing wraps module functions by name: a renamed one must fail here, not at run time."""
    from pathlib import Path

    from bench.profilers.ablation import BALANCER_PARTS, TIMED_PARTS

    lua = Path(__file__).resolve().parents[2] / "charts" / "api-gateway" / "files" / "lua"
    for label, module, name in TIMED_PARTS:
        assert f"function _M.{name}(" in (lua / f"{module}.lua").read_text(), (label, module, name)
    assert set(BALANCER_PARTS) <= {label for label, _, _ in TIMED_PARTS}

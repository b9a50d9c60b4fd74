"""Every query of the dashboard and of the PrometheusRule through Prometheus' own code: its PromQL
parser (tools/promql) and promtool (`check rules`, `test rules` with alerts-test.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from harness import promql
from harness.render import render_chart

from .conftest import ON

HERE = Path(__file__).resolve().parent


def test_every_query_parses_and_reads_named_metrics(queries):
    names = promql.metric_names(queries)  # raises with every expression the parser refuses
    assert len(names) >= 40, sorted(names)  # 44 dashboard targets, 2 variables, 5 alerts
    empty = [q for q, n in names.items() if not n]
    assert not empty, f"queries that read no metric: {empty}"


def test_the_parser_reports_what_it_refuses(promql_check):
    # The check above can fail: a typo, an unclosed range, a selector by regex name.
    results = promql.parse({"typo": "sum(rate(gateway_requests_total[5m])", "regex": '{__name__=~"gateway_.*"}'})
    assert "parse error" in results["typo"]["error"], results
    assert "no fixed metric name" in results["regex"]["error"], results
    with pytest.raises(promql.QueryError, match="typo"):
        promql.metric_names({"typo": "rate(x[5m)"})


def test_a_variable_the_dashboard_does_not_define_is_an_error():
    dashboard = {
        "templating": {"list": []},
        "panels": [{"title": "p", "targets": [{"refId": "A", "expr": 'x{a=~"$nope"}'}]}],
    }
    with pytest.raises(promql.QueryError, match=r"\$nope"):
        promql.dashboard_queries(dashboard)


def _rule_file(manifests: list[dict], folder: Path) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file (what the operator hands Prometheus)."""
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": promql.rule_of(manifests)["spec"]["groups"]}, sort_keys=False))
    return path


def _promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_promtool_checks_the_rendered_rules(promtool, rendered, tmp_path):
    rules = _rule_file(rendered, tmp_path)
    proc = _promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(rules), cwd=tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{rules.read_text()}"
    assert "SUCCESS: 5 rules found" in proc.stdout, proc.stdout


def test_promtool_refuses_a_broken_rule(promtool, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m)"}]}]}))
    proc = _promtool(promtool, "check", "rules", str(bad), cwd=tmp_path)
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr, proc


def test_the_alerts_fire_on_the_series_that_should_fire_them(promtool, tmp_path):
    """alerts-test.yaml: the defaults' alerts, their labels and every annotation as it reads."""
    _rule_file(render_chart("api-gateway", ON), tmp_path)
    test = tmp_path / "alerts-test.yaml"
    test.write_text((HERE / "alerts-test.yaml").read_text())
    proc = _promtool(promtool, "test", "rules", str(test), cwd=tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_the_alert_test_fails_when_a_threshold_moves(promtool, tmp_path):
    # The unit test above can fail: with a 50% error threshold, the 10% case must not fire.
    _rule_file(
        render_chart(
            "api-gateway",
            {**ON, "metrics": {**ON["metrics"], "prometheusRule": {"enabled": True, "errorRatio": {"threshold": 0.5}}}},
        ),
        tmp_path,
    )
    test = tmp_path / "alerts-test.yaml"
    test.write_text((HERE / "alerts-test.yaml").read_text())
    proc = _promtool(promtool, "test", "rules", str(test), cwd=tmp_path)
    assert proc.returncode != 0 and "LLMModelHighErrorRate" in proc.stdout + proc.stderr, proc.stdout

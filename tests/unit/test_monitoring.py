"""charts/api-gateway's Grafana dashboard ConfigMap and PrometheusRule as rendered: off by default,
the sidecar's label and folder, namespaces and selector labels, every threshold reaching its
expression, runbooks that exist. (Their PromQL against Prometheus' parser, promtool and the real
exporters: tests/monitoring, `nox -s monitoring`.)"""

from __future__ import annotations

import json
import re
import sys

import pytest

from harness import paths, promql
from harness.render import find, render_chart

CHART = paths.CHARTS / "api-gateway"
ON = {"metrics": {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}}
RUNBOOK = paths.REPO / "docs" / "monitoring.md"


def render(metrics: dict | None = None, **kw):
    return render_chart("api-gateway", {"metrics": metrics or {}}, **kw)


def alerts(manifests) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for group in promql.rule_of(manifests)["spec"]["groups"]:
        for r in group["rules"]:
            out.setdefault(r["alert"], []).append(r)
    return out


def test_both_are_off_by_default():
    manifests = render_chart("api-gateway")
    assert not find(manifests, "PrometheusRule")
    assert not [m for m in find(manifests, "ConfigMap") if "grafana_dashboard" in m["metadata"].get("labels", {})]


def test_the_dashboard_configmap_carries_the_sidecars_label_in_its_namespace():
    cm, dashboard = promql.dashboard_of(render(ON["metrics"]))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "llm"  # the release's
    assert "annotations" not in cm["metadata"]  # no folder: the sidecar's default
    assert dashboard["uid"] == "llm-charts-stack" and dashboard["panels"]
    assert list(cm["data"]) == ["llm-stack.json"]


def test_label_namespace_and_folder_are_values():
    settings = {
        "enabled": True,
        "namespace": "monitoring",
        "label": "example.com/dashboard",
        "labelValue": "llm",
        "folder": "LLM stack",
        "folderAnnotation": "grafana_folder",
        "labels": {"team": "ml", "app.kubernetes.io/name": "mine"},
    }
    cm, _ = promql.dashboard_of(render({"grafanaDashboard": settings}), label="example.com/dashboard")
    meta = cm["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["example.com/dashboard"] == "llm" and meta["labels"]["team"] == "ml"
    assert meta["labels"]["app.kubernetes.io/name"] == "api-gateway"  # the chart's labels win
    assert meta["annotations"] == {"grafana_folder": "LLM stack"}


def test_every_panel_reads_the_chosen_datasource_and_fits_the_grid():
    _, dashboard = promql.dashboard_of(render(ON["metrics"]))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= names
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} says nothing about what it shows"
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"] and t["expr"], panel["title"]


def test_every_dashboard_query_uses_only_defined_variables():
    _, dashboard = promql.dashboard_of(render(ON["metrics"]))
    queries = promql.dashboard_queries(dashboard)  # raises on an unknown $variable
    assert not [q for q in queries.values() if "$" in q]


def test_the_rule_has_the_selector_labels_and_every_alert_its_labels_and_annotations():
    rule = {
        "enabled": True,
        "namespace": "monitoring",
        "labels": {"release": "kube-prometheus-stack"},
        "alertLabels": {"team": "ml"},
    }
    manifests = render({"prometheusRule": rule})
    pr = promql.rule_of(manifests)
    assert pr["metadata"]["namespace"] == "monitoring"
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    found = alerts(manifests)
    assert sorted(found) == [
        "LLMModelDown",
        "LLMModelHighErrorRate",
        "LLMModelQueueGrowing",
        "LLMModelSlowTimeToFirstToken",
    ]
    assert len(found["LLMModelQueueGrowing"]) == 2  # vLLM and llama.cpp
    for name, rules in found.items():
        for r in rules:
            assert r["labels"]["team"] == "ml" and r["labels"]["severity"], name
            assert r["annotations"]["summary"] and r["annotations"]["description"], name
            assert r["annotations"]["runbook_url"].endswith("#" + name.lower()), name
            assert re.fullmatch(r"[0-9]+[smh]", r["for"]), name


def test_every_runbook_anchor_is_a_heading_of_docs_monitoring():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)
    }
    for name, rules in alerts(render(ON["metrics"])).items():
        anchor = rules[0]["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in headings, f"{name}: docs/monitoring.md has no heading for #{anchor}"


def test_thresholds_windows_and_for_reach_the_expressions():
    rule = {
        "enabled": True,
        "interval": "15s",
        "modelDown": {"for": "2m", "ignoreModels": "scratch-.*", "severity": "page"},
        "errorRatio": {"threshold": 0.2, "minRequestsPerSecond": 1, "window": "15m", "for": "20m"},
        "timeToFirstToken": {"quantile": 0.99, "thresholdSeconds": 1.5, "minStreamsPerSecond": 0.5, "window": "30m"},
        "queueGrowing": {"minWaiting": 12, "window": "20m", "for": "1h"},
    }
    manifests = render({"prometheusRule": rule})
    assert promql.rule_of(manifests)["spec"]["groups"][0]["interval"] == "15s"
    a = alerts(manifests)
    down = a["LLMModelDown"][0]
    assert 'model!~"scratch-.*"' in down["expr"] and down["for"] == "2m" and down["labels"]["severity"] == "page"
    err = a["LLMModelHighErrorRate"][0]
    assert ") > 0.2" in err["expr"] and ">= 1" in err["expr"] and "[15m]" in err["expr"] and err["for"] == "20m"
    assert "threshold 0.2" in err["annotations"]["description"]
    ttft = a["LLMModelSlowTimeToFirstToken"][0]
    assert "histogram_quantile(0.99," in ttft["expr"] and "> 1.5" in ttft["expr"] and ">= 0.5" in ttft["expr"]
    assert "[30m]" in ttft["expr"] and "p99 " in ttft["annotations"]["summary"]
    for q in a["LLMModelQueueGrowing"]:
        assert ">= 12" in q["expr"] and "[20m]" in q["expr"] and q["for"] == "1h"


@pytest.mark.parametrize("off", ["modelDown", "errorRatio", "timeToFirstToken", "queueGrowing"])
def test_each_alert_can_be_turned_off(off):
    a = alerts(render({"prometheusRule": {"enabled": True, off: {"enabled": False}}}))
    gone = {
        "modelDown": "LLMModelDown",
        "errorRatio": "LLMModelHighErrorRate",
        "timeToFirstToken": "LLMModelSlowTimeToFirstToken",
        "queueGrowing": "LLMModelQueueGrowing",
    }[off]
    assert gone not in a and len(a) == 3


def test_the_dashboard_file_is_the_one_in_the_chart():
    _, dashboard = promql.dashboard_of(render(ON["metrics"]))
    assert dashboard == json.loads((CHART / "dashboards" / "llm-stack.json").read_text())


def test_promql_check_parses_with_the_prometheus_version_promtool_is_built_from():
    sys.path.insert(0, str(paths.REPO / "tools"))
    import bootstrap

    pin = bootstrap.VERSIONS["go"]["promtool"]
    gomod = (paths.REPO / bootstrap.VERSIONS["go"]["promql-check"]["dir"] / "go.mod").read_text()
    required = re.search(r"^\s*(?:require\s+)?github\.com/prometheus/prometheus (v\S+)", gomod, re.M)
    assert required, gomod
    assert required.group(1) == pin["version"], (
        f"tools/promql/go.mod requires prometheus {required.group(1)}, promtool is pinned at {pin['version']} "
        "(tools/versions.json): bump both, then `go mod tidy` in tools/promql"
    )
    assert pin.get("lazy") and bootstrap.VERSIONS["go"]["promql-check"].get("lazy")
    assert "promtool" not in bootstrap.eager_tools()

"""The PromQL of the charts' monitoring objects (api-gateway's Grafana dashboard and PrometheusRule),
checked with Prometheus' own code, and the metric names real exporters serve.

- `dashboard_queries` / `rule_queries`: every query of a rendered dashboard ConfigMap or
  PrometheusRule, by a readable id. Grafana's variables are replaced first (a variable the
  dashboard does not define is an error, not a silent pass).
- `parse`: each query through tools/promql (promql-check: Prometheus' PromQL parser at the version
  of promtool's pin), giving the metric names it reads or the parser's error.
- `exported_names`: the metric names a /metrics text serves (a histogram family F also serves
  F_bucket, F_sum and F_count, before its first observation).
- `exporter_of`: which part of the stack a name belongs to, by its prefix.
"""

from __future__ import annotations

import json
import re
import subprocess

from . import tools

# The part of the stack that exports each prefix: the gateway's own names and the OpenTelemetry
# GenAI histograms it serves, vLLM, llama.cpp's llama-server.
EXPORTERS = {"gateway_": "gateway", "gen_ai_": "gateway", "vllm:": "vllm", "llamacpp:": "llama.cpp"}
# Grafana's built-in variables, as a query sees them after interpolation.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


class QueryError(AssertionError):
    pass


def dashboard_of(manifests: list[dict], label: str = "grafana_dashboard") -> tuple[dict, dict]:
    """(the ConfigMap, its dashboard JSON) of the one ConfigMap carrying the sidecar's label."""
    found = [m for m in manifests if m.get("kind") == "ConfigMap" and label in (m["metadata"].get("labels") or {})]
    if len(found) != 1:
        raise QueryError(f"expected one ConfigMap labelled {label}, rendered {len(found)}")
    data = found[0].get("data") or {}
    files = [k for k in data if k.endswith(".json")]
    if len(files) != 1:
        raise QueryError(f"ConfigMap {found[0]['metadata']['name']}: expected one *.json key, has {sorted(data)}")
    return found[0], json.loads(data[files[0]])


def rule_of(manifests: list[dict]) -> dict:
    found = [m for m in manifests if m.get("kind") == "PrometheusRule"]
    if len(found) != 1:
        raise QueryError(f"expected one PrometheusRule, rendered {len(found)}")
    return found[0]


def _panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def _interpolate(expr: str, where: str, variables: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise QueryError(f"{where}: ${name} is no variable of the dashboard nor a Grafana built-in: {expr}")
        return variables[name]

    return _VARIABLE.sub(sub, expr)


def dashboard_queries(dashboard: dict) -> dict[str, str]:
    """id -> PromQL of every panel target and every query variable's metric selector."""
    variables = dict(GRAFANA_BUILTINS)
    templating = dashboard.get("templating", {}).get("list", [])
    for v in templating:
        # A multi-value variable becomes a regex alternation; `.*` (allValue) stands for any.
        variables[v["name"]] = ".*"
    out: dict[str, str] = {}
    for v in templating:
        if v.get("type") != "query":
            continue
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = _LABEL_VALUES.match(query)
        if not m:
            raise QueryError(f"variable {v['name']}: only label_values(selector, label) is checked, got {query!r}")
        if m.group(1):
            out[f"variable {v['name']}"] = _interpolate(m.group(1), f"variable {v['name']}", variables)
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('title')!r} target {target.get('refId')}"
            if not target.get("expr"):
                raise QueryError(f"{where}: no expr")
            out[where] = _interpolate(target["expr"], where, variables)
    if not out:
        raise QueryError("the dashboard has no queries")
    return out


def rule_queries(rule: dict) -> dict[str, str]:
    """id -> PromQL of every alerting and recording rule of a PrometheusRule."""
    out = {}
    for group in rule["spec"]["groups"]:
        for i, r in enumerate(group.get("rules", [])):
            name = r.get("alert") or r.get("record")
            out[f"group {group['name']} rule {i} {name}"] = str(r["expr"])
    if not out:
        raise QueryError(f"PrometheusRule {rule['metadata']['name']} has no rules")
    return out


def parse(exprs: dict[str, str]) -> dict[str, dict]:
    """id -> {"metrics": [names], "error": "..."} from Prometheus' parser (tools/promql)."""
    proc = subprocess.run(
        [str(tools.tool("promql-check"))], input=json.dumps(exprs), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise QueryError(f"promql-check failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def metric_names(exprs: dict[str, str]) -> dict[str, list[str]]:
    """id -> the metric names it reads; raises QueryError listing every expression that does not parse."""
    results = parse(exprs)
    errors = [f"{i}: {r['error']}\n    {exprs[i]}" for i, r in sorted(results.items()) if r.get("error")]
    if errors:
        raise QueryError("PromQL the parser refuses:\n" + "\n".join(errors))
    return {i: r["metrics"] for i, r in results.items()}


def exporter_of(name: str) -> str | None:
    return next((part for prefix, part in EXPORTERS.items() if name.startswith(prefix)), None)


def exported_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition serves or, for a histogram, will serve."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                family, kind = parts[2], parts[3]
                names.add(family)
                if kind == "histogram":
                    names.update(f"{family}{s}" for s in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def unexported(used: dict[str, list[str]], exports: dict[str, set[str]]) -> list[str]:
    """Names used by the queries that their exporter does not serve, or that belong to no exporter.
    `exports`: exporter -> names it serves; exporters missing from it are not checked here."""
    problems = []
    for where, names in sorted(used.items()):
        for name in names:
            part = exporter_of(name)
            if part is None:
                problems.append(f"{where}: {name} has no known exporter (prefixes {sorted(EXPORTERS)})")
            elif part in exports and name not in exports[part]:
                problems.append(f"{where}: {name} is not served by {part}")
    return problems

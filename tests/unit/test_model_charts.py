"""What charts/vllm-models and charts/ramalama-models share: the same keys behave the same way in
both (one test, parametrized over the two charts), and the objects the api-gateway relies on."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from harness.render import find, get, render_chart


@dataclass(frozen=True)
class Chart:
    name: str
    kind: str  # prefix of the model's objects
    container: str  # the server container
    port: int  # its default container port
    entry_keys: tuple  # what an entry needs besides modelName

    def entry(self, name: str = "m", **keys) -> dict:
        return {"modelName": name, **dict(self.entry_keys), **keys}

    def render(self, *models, **values) -> list[dict]:
        return render_chart(self.name, {"models": list(models), **values})


VLLM = Chart("vllm-models", "vllm", "server", 8000, (("huggingfaceId", "org/model"),))
RAMALAMA = Chart("ramalama-models", "ramalama", "llama-server", 8080, (("gguf", "m.gguf"),))
CHARTS = [VLLM, RAMALAMA]


@pytest.fixture(params=CHARTS, ids=[c.name for c in CHARTS])
def chart(request) -> Chart:
    return request.param


def selects(match_labels: dict, expressions: list, labels: dict) -> bool:
    """A Kubernetes LabelSelector (matchLabels and the NotIn/DoesNotExist expressions used here)."""
    if not match_labels.items() <= labels.items():
        return False
    for e in expressions:
        if e["operator"] == "NotIn" and labels.get(e["key"]) in e["values"]:
            return False
        if e["operator"] == "DoesNotExist" and e["key"] in labels:
            return False
        assert e["operator"] in ("NotIn", "DoesNotExist"), e
    return True


def deployment(chart: Chart, ms: list[dict], name: str = "m") -> dict:
    return get(ms, "Deployment", f"{chart.kind}-{name}")


def server(chart: Chart, ms: list[dict], name: str = "m") -> dict:
    (c,) = [c for c in deployment(chart, ms, name)["spec"]["template"]["spec"]["containers"]
            if c["name"] == chart.container]
    return c


# --- the headless Service the api-gateway resolves (issue 14's contract) ------------------------

def test_headless_pods_service_lists_ready_pods_on_their_own_port(chart):
    ms = chart.render(chart.entry("m"))
    svc = get(ms, "Service", f"{chart.kind}-m")
    pods = get(ms, "Service", f"{chart.kind}-m-pods")
    assert pods["spec"]["clusterIP"] == "None"
    assert pods["spec"]["publishNotReadyAddresses"] is False
    assert pods["spec"]["selector"] == svc["spec"]["selector"]
    # SRV answers of _http._tcp.<name> carry the pod's port: the container port, not the Service's 8080.
    assert pods["spec"]["ports"] == [{"name": "http", "port": chart.port, "targetPort": "http", "protocol": "TCP"}]
    assert server(chart, ms)["ports"] == [{"name": "http", "containerPort": chart.port, "protocol": "TCP"}]
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert pods["metadata"]["labels"] == {**svc["metadata"]["labels"], "llm-stack/service": "pods"}
    assert "annotations" not in pods["metadata"]
    pod_labels = deployment(chart, ms)["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"].items() <= pod_labels.items()


def test_vllm_pods_service_follows_the_entrys_port():
    ms = VLLM.render(VLLM.entry("m", port=9000))
    assert get(ms, "Service", "vllm-m-pods")["spec"]["ports"][0]["port"] == 9000


def test_pods_service_name_is_cut_to_63_characters(chart):
    long = "m" * 50  # the longest modelName the schema allows
    ms = chart.render(chart.entry(long), tests={"enabled": False})
    names = [s["metadata"]["name"] for s in find(ms, "Service")]
    expected = f"{chart.kind}-{long}-pods"[:63].rstrip("-")
    assert sorted(names) == sorted([f"{chart.kind}-{long}", expected])
    assert all(len(n) <= 63 for n in names)
    if chart is RAMALAMA:
        assert expected == f"ramalama-{long}-pod"  # 64 characters cut by one


def test_disabled_entry_has_no_pods_service(chart):
    ms = chart.render(chart.entry("on"), chart.entry("off", enabled=False))
    assert sorted(s["metadata"]["name"] for s in find(ms, "Service")) == [f"{chart.kind}-on", f"{chart.kind}-on-pods"]


def test_service_monitor_scrapes_the_cluster_ip_service_only(chart):
    if chart is VLLM:
        ms = chart.render(chart.entry("m", serviceMonitor={"enabled": True}))
    else:
        ms = chart.render(chart.entry("m"), metrics={"enabled": True, "serviceMonitor": {"enabled": True}})
    (sm,) = find(ms, "ServiceMonitor")
    selector = sm["spec"]["selector"]
    chosen = [s["metadata"]["name"] for s in find(ms, "Service")
              if selects(selector["matchLabels"], selector.get("matchExpressions", []), s["metadata"]["labels"])]
    assert chosen == [f"{chart.kind}-m"]


def test_routes_name_the_pods_service_and_the_entrys_health_path():
    models = [VLLM.entry("v"), VLLM.entry("h", healthPath="/ready"), RAMALAMA.entry("g"),
              RAMALAMA.entry("gh", healthPath="/health")]
    gateway = render_chart("api-gateway", {"models": models})
    routes = {r["name"]: r for r in json.loads(get(gateway, "ConfigMap", "test-api-gateway")["data"]["routes.json"])
              ["routes"]}
    for chart, name in ((VLLM, "v"), (VLLM, "h"), (RAMALAMA, "g"), (RAMALAMA, "gh")):
        rendered = chart.render(*[m for m in models if ("gguf" in m) == (chart is RAMALAMA)])
        assert get(rendered, "Service", routes[name]["podsService"])["spec"]["clusterIP"] == "None"
    assert routes["h"]["healthPath"] == "/ready" and routes["gh"]["healthPath"] == "/health"
    # Only the entry's own healthPath: the gateway keeps its default otherwise.
    assert "healthPath" not in routes["v"] and "healthPath" not in routes["g"]

"""What charts/vllm-models and charts/ramalama-models share: the same keys behave the same way in
both (one test, parametrized over the two charts), and the objects the api-gateway relies on."""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass

import pytest
import yaml

from harness.paths import REPO, TESTS
from harness.render import HelmError, build_dependencies, chart_path, find, get, render_chart, run_helm

PROBE = TESTS / "fixtures" / "model-catalog-probe"


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
    (c,) = [
        c for c in deployment(chart, ms, name)["spec"]["template"]["spec"]["containers"] if c["name"] == chart.container
    ]
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
    ms = chart.render(chart.entry("m", serviceMonitor={"enabled": True}))
    (sm,) = find(ms, "ServiceMonitor")
    selector = sm["spec"]["selector"]
    chosen = [
        s["metadata"]["name"]
        for s in find(ms, "Service")
        if selects(selector["matchLabels"], selector.get("matchExpressions", []), s["metadata"]["labels"])
    ]
    assert chosen == [f"{chart.kind}-m"]


def test_routes_name_the_pods_service_each_chart_renders(chart):
    long = chart.entry("l" * 50)
    routes = render_chart(
        PROBE,
        {
            "calls": [
                {"name": "routes", "helper": "model-catalog.routes", "arg": {"models": [long], "namespace": "llm"}}
            ]
        },
    )
    (route,) = yaml.safe_load(get(routes, "ConfigMap", "probe")["data"]["routes"])["routes"]
    pods = get(chart.render(long), "Service", route["podsService"])
    assert pods["spec"]["clusterIP"] == "None"


# --- one vocabulary: the same key behaves the same in both charts, per entry or in defaults ------


def pod_spec(chart: Chart, ms: list[dict]) -> dict:
    return deployment(chart, ms)["spec"]["template"]["spec"]


def pod_meta(chart: Chart, ms: list[dict]) -> dict:
    return deployment(chart, ms)["spec"]["template"]["metadata"]


SPREAD = [
    {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"llm-stack/model": "m"}},
    }
]
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["llm"]}]}]
        }
    }
}
PSC = {"runAsNonRoot": True, "runAsUser": 2000, "runAsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}}
CSC = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "runAsUser": 3000,
}
SIDECAR = {"name": "shipper", "image": "example/shipper:1.0", "securityContext": CSC}
INIT = {"name": "warm", "image": "example/warm:1.0", "securityContext": CSC}


def _check_service(chart, ms):
    svc = get(ms, "Service", f"{chart.kind}-m")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert "annotations" not in get(ms, "Service", f"{chart.kind}-m-pods")["metadata"]


def _check_pdb(chart, ms):
    (pdb,) = find(ms, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment(chart, ms)["spec"]["selector"]["matchLabels"]


def _check_monitor(chart, ms):
    (sm,) = find(ms, "ServiceMonitor")
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["metadata"]["labels"]["llm-stack/model"] == "m"  # the chart's label wins


def _check_probes(chart, ms):
    c = server(chart, ms)
    assert c["startupProbe"]["failureThreshold"] == 720 and c["startupProbe"]["periodSeconds"] == 10
    assert c["livenessProbe"]["timeoutSeconds"] == 20
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/ready", "port": "http"}
    assert deployment(chart, ms)["spec"]["progressDeadlineSeconds"] >= 7200 + 600


def _check_volumes(chart, ms):
    spec = pod_spec(chart, ms)
    assert spec["volumes"][-1] == {"name": "extra", "configMap": {"name": "my-config"}}
    assert server(chart, ms)["volumeMounts"][-1] == {"name": "extra", "mountPath": "/etc/extra", "readOnly": True}


def _check_containers(chart, ms):
    spec = pod_spec(chart, ms)
    assert [c["name"] for c in spec["containers"]] == [chart.container, "shipper"]
    assert [c["name"] for c in spec["initContainers"]] == ["warm"]


def _check_resources(chart, ms):
    res = server(chart, ms)["resources"]
    assert res["limits"]["memory"] == "64Gi"
    assert res["requests"]["memory"]  # the default request stays: resources merge key by key


# key -> (value, check of the rendered manifests)
SAME = {
    "podLabels": (
        {"team": "ml", "llm-stack/model": "hijack", "app.kubernetes.io/name": "x"},
        lambda c, ms: (
            pod_meta(c, ms)["labels"]["team"] == "ml"
            and pod_meta(c, ms)["labels"]["llm-stack/model"] == "m"
            and pod_meta(c, ms)["labels"]["app.kubernetes.io/name"] == c.name
        ),
    ),
    "podAnnotations": (
        {"example.com/team": "ml"},
        lambda c, ms: pod_meta(c, ms)["annotations"]["example.com/team"] == "ml",
    ),
    "priorityClassName": ("llm-serving", lambda c, ms: pod_spec(c, ms)["priorityClassName"] == "llm-serving"),
    "runtimeClassName": ("nvidia", lambda c, ms: pod_spec(c, ms)["runtimeClassName"] == "nvidia"),
    "nodeSelector": ({"pool": "llm"}, lambda c, ms: pod_spec(c, ms)["nodeSelector"] == {"pool": "llm"}),
    "tolerations": (TOLERATIONS, lambda c, ms: pod_spec(c, ms)["tolerations"] == TOLERATIONS),
    "affinity": (AFFINITY, lambda c, ms: pod_spec(c, ms)["affinity"] == AFFINITY),
    "topologySpreadConstraints": (SPREAD, lambda c, ms: pod_spec(c, ms)["topologySpreadConstraints"] == SPREAD),
    # (In `defaults` Helm merges the map into the chart's own, so the chart's other keys may stay.)
    "podSecurityContext": (PSC, lambda c, ms: PSC.items() <= pod_spec(c, ms)["securityContext"].items()),
    "securityContext": (CSC, lambda c, ms: server(c, ms)["securityContext"] == CSC),
    "strategy": ({"type": "Recreate"}, lambda c, ms: deployment(c, ms)["spec"]["strategy"] == {"type": "Recreate"}),
    "service": ({"type": "NodePort", "annotations": {"example.com/lb": "internal"}}, _check_service),
    "podDisruptionBudget": ({"enabled": True, "minAvailable": 1}, _check_pdb),
    "serviceMonitor": (
        {"enabled": True, "interval": "15s", "labels": {"release": "prometheus", "llm-stack/model": "x"}},
        _check_monitor,
    ),
    "probes+healthPath": (
        {"probes": {"startup": {"failureThreshold": 720}, "liveness": {"timeoutSeconds": 20}}, "healthPath": "/ready"},
        _check_probes,
    ),
    "extraVolumes+extraVolumeMounts": (
        {
            "extraVolumes": [{"name": "extra", "configMap": {"name": "my-config"}}],
            "extraVolumeMounts": [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
        },
        _check_volumes,
    ),
    "initContainers+sidecars": ({"initContainers": [INIT], "sidecars": [SIDECAR]}, _check_containers),
    "env": ([{"name": "EXTRA", "value": "1"}], lambda c, ms: {"name": "EXTRA", "value": "1"} in server(c, ms)["env"]),
    "resources": ({"limits": {"memory": "64Gi"}}, _check_resources),
    "replicas": (0, lambda c, ms: deployment(c, ms)["spec"]["replicas"] == 0),
    "inferencePool": ({"enabled": True, "route": {"enabled": False}}, lambda c, ms: _check_pool(c, ms)),
}


def _check_pool(chart, ms):
    (pool,) = [m for m in ms if m["kind"] == "InferencePool"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_meta(chart, ms)["labels"].items()
    assert pool["spec"]["targetPorts"] == [{"number": server(chart, ms)["ports"][0]["containerPort"]}]


def _keys(key: str, value) -> dict:
    return value if "+" in key else {key: value}


@pytest.mark.parametrize("where", ["entry", "defaults"])
@pytest.mark.parametrize("key", list(SAME))
def test_the_same_key_does_the_same_in_both_charts(chart, key, where):
    value, check = SAME[key]
    keys = _keys(key, value)
    ms = chart.render(chart.entry("m", **keys)) if where == "entry" else chart.render(chart.entry("m"), defaults=keys)
    # A check either asserts itself (returns None) or returns whether it holds.
    assert check(chart, ms) is not False, f"{chart.name}: {key} set in the {where}"


def test_both_schemas_give_the_shared_keys_the_same_shape():
    root = json.loads((REPO / "values.schema.json").read_text())["definitions"]
    vllm, gguf = root["vllmModelSettings"]["properties"], root["ggufModelSettings"]["properties"]
    shared = {k for key in SAME for k in key.split("+")} | {
        "port",
        "healthPath",
        "chatTemplate",
        "extraArgs",
        "gpuRequestCount",
        "adapters",
    }
    for key in sorted(shared):
        assert key in vllm and key in gguf, key
        strip = {k: v for k, v in vllm[key].items() if k != "description"}
        assert strip == {k: v for k, v in gguf[key].items() if k != "description"}, key


def test_image_pull_secrets_take_names_and_objects_in_every_chart():
    secrets = ["by-name", {"name": "by-object"}]
    for chart in CHARTS:
        spec = pod_spec(chart, chart.render(chart.entry("m"), imagePullSecrets=secrets))
        assert spec["imagePullSecrets"] == [{"name": "by-name"}, {"name": "by-object"}], chart.name
    models = [VLLM.entry("m")]
    for other, kind, name in (
        ("api-gateway", "Deployment", "test-api-gateway"),
        ("openwebui", "Deployment", "test-openwebui"),
    ):
        ms = render_chart(other, {"models": models, "imagePullSecrets": secrets})
        spec = get(ms, kind, name)["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "by-name"}, {"name": "by-object"}], other


# --- the same refusals ------------------------------------------------------------------------------


def fails(chart: Chart, *models, **values) -> str:
    with pytest.raises(HelmError) as err:
        chart.render(*models, **values)
    return err.value.stderr


def test_a_taken_volume_mount_or_container_name_is_refused(chart):
    own_volume = "tmp"
    err = fails(
        chart,
        chart.entry(
            "m",
            extraVolumes=[{"name": own_volume, "emptyDir": {}}],
            extraVolumeMounts=[{"name": "nowhere", "mountPath": "/tmp"}],
            sidecars=[{"name": chart.container, "image": "x/y:1"}],
        ),
    )
    assert err.count(f"{chart.name}: invalid values:") == 1
    assert f'models[0] (m): extraVolumes: the volume name "{own_volume}" is the chart\'s own' in err
    assert 'models[0] (m): extraVolumeMounts: "/tmp" is mounted by the chart already' in err
    assert 'models[0] (m): extraVolumeMounts: no volume named "nowhere"' in err
    assert f'models[0] (m): sidecars: the container name "{chart.container}" is taken' in err


def test_a_plain_secret_in_a_sidecar_is_refused(chart):
    err = fails(
        chart,
        chart.entry("m", sidecars=[{"name": "s", "image": "x/y:1", "env": [{"name": "API_KEY", "value": "s3cr3t"}]}]),
    )
    assert "models[0] (m) sidecars[s]: env API_KEY has a plain value" in err and "s3cr3t" not in err


def test_a_request_above_its_limit_is_refused(chart):
    err = fails(chart, chart.entry("m", resources={"limits": {"cpu": "100m"}}))
    assert "models[0] (m): resources.requests.cpu" in err and "is above resources.limits.cpu 100m" in err


# --- chat templates --------------------------------------------------------------------------------

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"


def test_an_inline_chat_template_is_a_read_only_configmap_file(chart):
    ms = chart.render(chart.entry("m", chatTemplate=TEMPLATE))
    cm = get(ms, "ConfigMap", f"{chart.kind}-m-chat-template")
    # base64 in binaryData: the mounted file is the template, the manifests hold no "{{".
    assert base64.b64decode(cm["binaryData"]["chat-template.jinja"]).decode() == TEMPLATE and "data" not in cm
    spec = pod_spec(chart, ms)
    assert {"name": "chat-template", "configMap": {"name": cm["metadata"]["name"], "defaultMode": 0o444}} in spec[
        "volumes"
    ]
    c = server(chart, ms)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "chat-template")
    assert mount["readOnly"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    path = f"{mount['mountPath']}/chat-template.jinja"
    flag = "--chat-template" if chart is VLLM else "--chat-template-file"
    assert c["args"][c["args"].index(flag) + 1] == path
    if chart is RAMALAMA:
        assert "--jinja" in c["args"]  # llama-server renders a template file only with --jinja
    # A changed template rolls the pods: the engines read it once, at start.
    before = pod_meta(chart, ms)["annotations"]["checksum/chat-template"]
    after = pod_meta(chart, chart.render(chart.entry("m", chatTemplate=TEMPLATE + " ")))["annotations"][
        "checksum/chat-template"
    ]
    assert before != after


def test_a_chat_template_name_or_path_is_passed_as_it_is(chart):
    c = server(chart, chart.render(chart.entry("m", chatTemplate="chatml")))
    assert c["args"][c["args"].index("--chat-template") + 1] == "chatml"
    assert not find(chart.render(chart.entry("m", chatTemplate="chatml")), "ConfigMap")


def test_no_chat_template_adds_nothing(chart):
    ms = chart.render(chart.entry("m"))
    assert not [a for a in server(chart, ms)["args"] if "chat-template" in a]
    assert "chat-template" not in {v["name"] for v in pod_spec(chart, ms)["volumes"]}


# --- deprecated keys keep working, and the install notes say what replaces them ----------------


def notes(chart: str, values: dict) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it (Helm 4: Helm 3 needs a cluster for it)."""
    path = chart_path(chart)
    build_dependencies(str(path))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        out = run_helm(["install", "notes", str(path), "-f", f.name, "--dry-run=client"], helm="helm4").stdout
    return out.split("NOTES:", 1)[1]


def test_vllm_startup_timeout_minutes_still_sets_the_budget_and_is_announced():
    values = {"models": [VLLM.entry("m", startupTimeoutMinutes=90), VLLM.entry("other")]}
    ms = VLLM.render(*values["models"])
    assert server(VLLM, ms, "m")["startupProbe"]["failureThreshold"] == 540  # 90 min at 10 s
    assert server(VLLM, ms, "other")["startupProbe"]["failureThreshold"] == 180  # the default 30 min
    text = notes("vllm-models", values)
    assert "DEPRECATED: startupTimeoutMinutes (models[0] (m))" in text
    assert "set probes.startup.failureThreshold" in text
    assert "DEPRECATED" not in notes("vllm-models", {"models": [VLLM.entry("other")]})


LEGACY = {
    "probes": {"startup": {"failureThreshold": 120}},
    "strategy": {"type": "Recreate"},
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1234, "seccompProfile": {"type": "RuntimeDefault"}},
    "podLabels": {"team": "ml"},
    "podAnnotations": {"example.com/team": "ml"},
    "service": {"annotations": {"example.com/owner": "ml"}},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "interval": "15s"}},
    "podDisruptionBudget": {"enabled": True},
}


def test_ramalama_chart_wide_keys_of_0_x_still_apply_and_are_announced():
    ms = RAMALAMA.render(RAMALAMA.entry("m"), **LEGACY)
    c = server(RAMALAMA, ms)
    assert c["startupProbe"]["failureThreshold"] == 120 and c["startupProbe"]["periodSeconds"] == 10
    assert "--metrics" in c["args"]
    assert deployment(RAMALAMA, ms)["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_spec(RAMALAMA, ms)["securityContext"]["runAsUser"] == 1234
    assert pod_meta(RAMALAMA, ms)["labels"]["team"] == "ml"
    assert pod_meta(RAMALAMA, ms)["annotations"] == {"example.com/team": "ml"}
    assert get(ms, "Service", "ramalama-m")["metadata"]["annotations"] == {"example.com/owner": "ml"}
    assert get(ms, "ServiceMonitor", "ramalama-m")["spec"]["endpoints"][0]["interval"] == "15s"
    assert find(ms, "PodDisruptionBudget")
    # An entry still wins over them.
    own = RAMALAMA.render(RAMALAMA.entry("m", strategy={"type": "RollingUpdate"}), **LEGACY)
    assert deployment(RAMALAMA, own)["spec"]["strategy"] == {"type": "RollingUpdate"}
    text = notes("ramalama-models", {"models": [RAMALAMA.entry("m")], **LEGACY})
    for old in LEGACY:
        assert f"DEPRECATED: {old} " in text, old
    assert "move it to defaults.probes" in text
    assert "DEPRECATED" not in notes("ramalama-models", {"models": [RAMALAMA.entry("m")]})


def test_disabled_entry_notes_say_which_cache_pvc_stays():
    text = notes(
        "vllm-models",
        {
            "models": [
                VLLM.entry("on"),
                VLLM.entry("off", enabled=False),
                VLLM.entry("gone", enabled=False, pvcKeep=False),
            ]
        },
    )
    assert "Disabled models keep their cache PVC" in text
    assert "delete pvc vllm-off-cache" in text and "vllm-gone-cache" not in text

"""charts/model-catalog's helpers on their own, rendered through a probe chart
(tests/fixtures/model-catalog-probe) that writes what each helper returns into a ConfigMap."""

from __future__ import annotations

import re

import pytest
import yaml

from harness import paths
from harness.paths import TESTS
from harness.render import HelmError, get, render_chart

PROBE = TESTS / "fixtures" / "model-catalog-probe"


def call(helper: str, arg=None, *, root: bool = False, context: bool = False, values: dict | None = None, **kw) -> str:
    """What `include helper arg` renders (root: the argument is the chart's $; context: arg gets "context" $)."""
    c = {"name": "out", "helper": helper, "arg": arg, "root": root, "context": context}
    manifests = render_chart(PROBE, {"calls": [c], **(values or {})}, **kw)
    return get(manifests, "ConfigMap", "probe")["data"]["out"]


def call_yaml(helper: str, arg=None, **kw):
    return yaml.safe_load(call(helper, arg, **kw))


# --- the routing table the api-gateway reads ---------------------------------------------------


def test_routes_name_both_services_and_only_the_entrys_own_health_path():
    models = [
        {"modelName": "a", "huggingfaceId": "org/a", "healthPath": "/ready", "aliases": ["x"]},
        {"modelName": "b", "gguf": "b.gguf"},
        {"modelName": "off", "huggingfaceId": "org/off", "enabled": False},
    ]
    routes = call_yaml("model-catalog.routes", {"models": models, "namespace": "ns"})["routes"]
    assert routes == [
        {
            "name": "a",
            "aliases": ["x"],
            "kind": "vllm",
            "service": "vllm-a",
            "podsService": "vllm-a-pods",
            "namespace": "ns",
            "port": 8080,
            "adapters": [],
            "healthPath": "/ready",
        },
        {
            "name": "b",
            "aliases": [],
            "kind": "ramalama",
            "service": "ramalama-b",
            "podsService": "ramalama-b-pods",
            "namespace": "ns",
            "port": 8080,
            "adapters": [],
        },
    ]


# The contract with the api-gateway: each route's adapters, as {name, source} (source is what
# /v1/models shows as the adapter's `root`: the Hugging Face id, or the path the engine loads).
def test_routes_list_each_models_adapters_with_name_and_source():
    models = [
        {
            "modelName": "base",
            "huggingfaceId": "org/base",
            "adapters": [
                {"name": "sql", "huggingfaceId": "org/sql-lora"},
                {"name": "org/chat-lora", "path": "adapters/chat/"},
                {"name": "local", "hostPath": "/srv/adapters/local"},
            ],
        },
        {
            "modelName": "g",
            "gguf": "g.gguf",
            "adapters": [{"name": "g-lora", "path": "loras/g.gguf"}, {"name": "h", "hostPath": "/srv/h.gguf"}],
        },
    ]
    routes = {r["name"]: r for r in call_yaml("model-catalog.routes", {"models": models, "namespace": "ns"})["routes"]}
    assert routes["base"]["adapters"] == [
        {"name": "sql", "source": "org/sql-lora"},
        {"name": "org/chat-lora", "source": "/data/adapters/chat"},
        {"name": "local", "source": "/mnt/adapters/2"},
    ]
    assert routes["g"]["adapters"] == [
        {"name": "g-lora", "source": "/mnt/models/loras/g.gguf"},
        {"name": "h", "source": "/mnt/adapters/1/h.gguf"},
    ]


def test_adapters_on_the_node_get_a_read_only_mount_of_their_own():
    got = call_yaml("model-catalog.adapters", {"modelName": "m", "adapters": [{"name": "a", "hostPath": "/srv/a/"}]})
    assert got == {
        "adapters": [
            {
                "name": "a",
                "source": "/mnt/adapters/0",
                "mountPath": "/mnt/adapters/0",
                "hostPath": "/srv/a",
                "volume": "adapter-0",
            }
        ]
    }


@pytest.mark.parametrize(
    "models, message",
    [
        (
            [{"modelName": "base", "aliases": ["sql"], "adapters": [{"name": "sql", "huggingfaceId": "org/sql"}]}],
            'models[0] (base): "sql" is the name of the LoRA adapter models[0].adapters[0] (sql, an adapter of base); '
            'an adapter is served and routed under its own name, listed in its model\'s `adapters`: remove "sql" from aliases',
        ),
        (
            [
                {"modelName": "other", "huggingfaceId": "org/o"},
                {"modelName": "base", "adapters": [{"name": "other", "huggingfaceId": "org/sql"}]},
            ],
            'models[0] (other): "other" is the name of the LoRA adapter models[1].adapters[0] (other, an adapter of base)',
        ),
        (
            [
                {"modelName": "a", "adapters": [{"name": "x", "huggingfaceId": "org/x"}]},
                {"modelName": "b", "adapters": [{"name": "x", "huggingfaceId": "org/y"}]},
            ],
            'models[1].adapters[0] (x, an adapter of b): the adapter name "x" is already used by models[0].adapters[0]',
        ),
        (
            [{"modelName": "a", "adapters": [{"name": "x", "path": "/data/x"}]}],
            'models[0].adapters[0] (x, an adapter of a): path "/data/x" must be relative to the cache PVC',
        ),
        (
            [{"modelName": "a", "adapters": [{"name": "x", "path": "../x"}]}],
            'path "../x" must stay inside the cache PVC',
        ),
        (
            [{"modelName": "g", "gguf": "g.gguf", "adapters": [{"name": "x", "huggingfaceId": "org/x"}]}],
            "llama-server loads LoRA adapters from GGUF files only and downloads none",
        ),
        (
            [{"modelName": "g", "gguf": "g.gguf", "adapters": [{"name": "x", "hostPath": "/srv/x"}]}],
            'hostPath "/srv/x" must name a .gguf file',
        ),
        (
            [{"modelName": "a", "adapters": [{"name": "x", "huggingfaceId": "org/x", "path": "x"}]}],
            "set exactly one source",
        ),
    ],
)
def test_catalog_refuses_adapter_names_and_sources_that_cannot_work(models, message):
    assert message in call("model-catalog.validate", models)


def test_disabled_entries_adapters_clash_with_nothing():
    models = [
        {"modelName": "a", "aliases": ["x"]},
        {"modelName": "b", "enabled": False, "adapters": [{"name": "x", "huggingfaceId": "org/x"}]},
    ]
    assert call("model-catalog.validate", models).strip() == ""


def test_pods_service_name_is_cut_to_63_characters():
    assert (
        call("model-catalog.podsServiceName", {"modelName": "m" * 50, "gguf": "x.gguf"})
        == "ramalama-" + "m" * 50 + "-pod"
    )
    assert call("model-catalog.podsServiceName", {"modelName": "m" * 50}) == "vllm-" + "m" * 50 + "-pods"


# --- merge rules --------------------------------------------------------------------------------


def test_deep_merge_merges_maps_at_every_depth_and_null_keeps_the_base():
    base = {
        "probes": {"startup": {"periodSeconds": 10, "failureThreshold": 60}},
        "list": [1, 2],
        "count": 5,
        "keep": "k",
    }
    over = {"probes": {"startup": {"failureThreshold": 90}}, "list": [3], "count": 0, "keep": None, "new": False}
    assert call_yaml("model-catalog.deepMerge", {"base": base, "over": over}) == {
        "probes": {"startup": {"periodSeconds": 10, "failureThreshold": 90}},
        "list": [3],
        "count": 0,
        "keep": "k",
        "new": False,
    }


def test_resolve_entry_replaces_keys_whole_except_the_settings_groups():
    defaults = {
        "nodeSelector": {"a": "1", "b": "2"},
        "extraArgs": ["--x"],
        "replicas": 2,
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}},
        "probes": {"startup": {"periodSeconds": 10, "failureThreshold": 60}},
        "service": {"type": "ClusterIP", "annotations": {"a": "1"}},
    }
    entry = {
        "modelName": "m",
        "nodeSelector": {"c": "3"},
        "extraArgs": [],
        "replicas": 0,
        "threads": None,
        "resources": {"limits": {"memory": "16Gi"}},
        "probes": {"startup": {"failureThreshold": 90}},
        "service": {"annotations": {"b": "2"}},
    }
    got = call_yaml("model-catalog.resolveEntry", {"model": entry, "defaults": {**defaults, "threads": 4}})
    assert got["nodeSelector"] == {"c": "3"} and got["extraArgs"] == [] and got["replicas"] == 0
    assert got["threads"] == 4  # null in the entry takes the default
    assert got["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
    assert got["probes"] == {"startup": {"periodSeconds": 10, "failureThreshold": 90}}
    assert got["service"] == {"type": "ClusterIP", "annotations": {"a": "1", "b": "2"}}


def test_merge_groups_are_one_list():
    assert call_yaml("model-catalog.mergeGroups") == [
        "autoscaling",
        "drain",
        "hfToken",
        "image",
        "inferencePool",
        "podDisruptionBudget",
        "probes",
        "resources",
        "service",
        "serviceMonitor",
    ]


def test_chart_labels_win_over_user_labels():
    got = call_yaml(
        "model-catalog.mergeLabels",
        {
            "own": {"app.kubernetes.io/name": "x", "llm-stack/model": "m"},
            "extra": {"llm-stack/model": "hijack", "team": "ml"},
        },
    )
    assert got == {"app.kubernetes.io/name": "x", "llm-stack/model": "m", "team": "ml"}


# --- shapes -------------------------------------------------------------------------------------


def test_image_pull_secrets_take_names_and_name_objects_mixed():
    assert call_yaml("model-catalog.imagePullSecrets", ["a", {"name": "b"}]) == [{"name": "a"}, {"name": "b"}]
    assert call("model-catalog.imagePullSecrets", []) == ""


@pytest.mark.parametrize(
    "quantity, number",
    [
        ("8Gi", 8 * 2**30),
        ("500m", 0.5),
        ("2", 2),
        (4, 4),
        ("1.5", 1.5),
        ("100M", 1e8),
        ("4096Mi", 4 * 2**30),
        ("", None),
        ("lots", None),
    ],
)
def test_quantities_are_read_as_numbers(quantity, number):
    out = call("model-catalog.quantity", quantity)
    assert (float(out) if out else None) == number


# --- names, cluster domain and the gateway URL ---------------------------------------------------


def test_cluster_domain_is_one_setting_and_builds_every_fqdn():
    assert (
        call("model-catalog.gatewayUrl", root=True, namespace="chat")
        == "http://api-gateway.chat.svc.cluster.local:80/v1"
    )
    corp = {
        "global": {"clusterDomain": "corp.example", "gateway": {"serviceName": "gw", "namespace": "edge", "port": 8080}}
    }
    assert call("model-catalog.gatewayUrl", root=True, values=corp) == "http://gw.edge.svc.corp.example:8080/v1"
    assert (
        call("model-catalog.serviceFqdn", {"name": "s", "namespace": "ns"}, context=True, values=corp)
        == "s.ns.svc.corp.example"
    )
    # The api-gateway's older key still wins where it is set (deprecated).
    legacy = {**corp, "routing": {"clusterDomain": "old.example"}}
    assert call("model-catalog.clusterDomain", root=True, values=legacy) == "old.example"


def test_labels_and_names_of_the_calling_chart():
    labels = call_yaml("model-catalog.labels", root=True, release="rel")
    assert labels == {
        "helm.sh/chart": "model-catalog-probe-0.0.0",
        "app.kubernetes.io/name": "model-catalog-probe",
        "app.kubernetes.io/instance": "rel",
        "app.kubernetes.io/version": "",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/part-of": "llm-stack",
    }
    assert call_yaml("model-catalog.selectorLabels", root=True, release="rel", values={"nameOverride": "short"}) == {
        "app.kubernetes.io/name": "short",
        "app.kubernetes.io/instance": "rel",
    }
    assert call("model-catalog.fullname", root=True, release="rel") == "rel-model-catalog-probe"
    assert call("model-catalog.fullname", root=True, release="my-model-catalog-probe") == "my-model-catalog-probe"


@pytest.mark.parametrize(
    "api_versions, expected",
    [
        (["policy/v1beta1/PodDisruptionBudget"], "policy/v1beta1"),
        (["policy/v1/PodDisruptionBudget", "policy/v1beta1/PodDisruptionBudget"], "policy/v1"),
        ([], "policy/v1"),
    ],
)
def test_pdb_api_version_is_what_the_cluster_serves(api_versions, expected):
    assert call("model-catalog.pdbApiVersion", root=True, api_versions=api_versions) == expected


# --- collect-then-fail --------------------------------------------------------------------------


def test_fail_reports_every_message_once_naming_the_chart():
    with pytest.raises(HelmError) as err:
        call("model-catalog.fail", {"messages": ["first problem", "", "second\n\nthird"]}, context=True)
    assert "model-catalog-probe: invalid values:\nfirst problem\nsecond\nthird" in err.value.stderr
    assert err.value.stderr.count("invalid values") == 1
    assert call("model-catalog.fail", {"messages": ["", "\n"]}, context=True) == ""


# --- shared logic lives once ---------------------------------------------------------------------

ONCE = {
    "cluster.local": "the cluster domain (global.clusterDomain, model-catalog.clusterDomain)",
    "helm.sh/chart:": "the common labels (model-catalog.labels)",
    "app.kubernetes.io/managed-by:": "the common labels (model-catalog.labels)",
    "invalid values:": "collect-then-fail (model-catalog.fail)",
    "policy/v1beta1": "the PDB apiVersion (model-catalog.pdbApiVersion)",
}


@pytest.mark.parametrize("text", list(ONCE))
def test_shared_logic_is_written_only_in_model_catalog(text):
    found = [
        str(p.relative_to(paths.REPO))
        for chart in paths.charts()
        if chart.name != "model-catalog"
        for p in sorted((chart / "templates").rglob("*"))
        if p.is_file() and text in p.read_text()
    ]
    assert not found, f"{ONCE[text]} is written again in {found}; include the model-catalog helper instead"
    assert any(text in p.read_text() for p in (paths.CHARTS / "model-catalog" / "templates").glob("*.tpl"))


def test_every_chart_reads_image_pull_secrets_through_the_shared_helper():
    readers = [
        p
        for chart in paths.charts()
        for p in sorted((chart / "templates").rglob("*"))
        if p.is_file() and re.search(r"(Values|\$v)\.imagePullSecrets\b", p.read_text())
    ]
    assert {p.parts[-3] for p in readers} >= {"api-gateway", "openwebui", "model-catalog"}, readers
    for p in readers:
        assert 'include "model-catalog.imagePullSecrets"' in p.read_text(), p.relative_to(paths.REPO)


# --- what the model charts render for the Gateway API Inference Extension -------------------------


def test_routed_names_are_the_model_its_aliases_and_its_adapters():
    entry = {"modelName": "m", "aliases": ["a", "m"], "adapters": [{"name": "lora", "huggingfaceId": "org/l"}]}
    assert call_yaml("model-catalog.routedNames", entry) == ["m", "a", "lora"]


def test_inference_route_paths_default_to_the_gateways_own():
    assert call_yaml("model-catalog.inferenceRoutePaths", {"modelName": "m"}) == call_yaml("model-catalog.gatewayPaths")
    assert call_yaml("model-catalog.inferenceRoutePaths", {"inferencePool": {"route": {"paths": ["/v1"]}}}) == ["/v1"]


def test_pod_template_labels_of_the_chart_win_over_the_entrys():
    got = call_yaml(
        "model-catalog.modelPodTemplate",
        {
            "model": {"modelName": "m", "engine": "vllm", "podLabels": {"llm-stack/role": "hijack", "team": "ml"}},
            "podLabels": {"llm-stack/role": "leader"},
            "container": {"name": "server"},
        },
        context=True,
    )
    assert got["metadata"]["labels"]["llm-stack/role"] == "leader"
    assert got["metadata"]["labels"]["team"] == "ml"
    assert got["spec"]["containers"] == [{"name": "server"}]
    assert got["spec"]["automountServiceAccountToken"] is False

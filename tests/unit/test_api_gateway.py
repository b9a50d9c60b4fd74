"""charts/api-gateway: what the rendered manifests promise (the gateway's behaviour on a real
nginx is tested in tests/gateway)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.render import HelmError, find, get, render_chart

CHART = Path(__file__).resolve().parents[2] / "charts" / "api-gateway"
FILES = CHART / "files"
LUA_FILES = sorted((FILES / "lua").glob("*.lua"))

QWEN = {"modelName": "qwen", "huggingfaceId": "Qwen/Qwen2.5-1.5B-Instruct", "aliases": ["Qwen/Qwen2.5-1.5B-Instruct"]}
TINY = {"modelName": "tiny", "gguf": "tiny.gguf", "aliases": ["tinyllama"]}
OFF = {"modelName": "retired", "huggingfaceId": "org/retired", "enabled": False}
CATALOG = {"models": [OFF, QWEN, TINY]}
DEBIAN = {
    "nginx": {
        "loadModules": ["/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"],
        "luaPackagePath": "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua",
        "luaPackageCPath": "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so",
    }
}


def render(values=None, chart=CHART, **kw):
    return render_chart(chart, values, **kw)


def merged(*dicts):
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_map(manifests):
    return get(manifests, "ConfigMap", "test-api-gateway")["data"]


def deployment(manifests):
    return get(manifests, "Deployment", "test-api-gateway")


def routes(manifests):
    return json.loads(config_map(manifests)["routes.json"])


def checksum(manifests):
    return deployment(manifests)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


# --- the ConfigMap carries the real files -------------------------------------------------


def test_lua_modules_are_in_the_configmap_byte_for_byte():
    data = config_map(render(CATALOG))
    assert LUA_FILES, "no Lua modules under files/lua"
    for path in LUA_FILES:
        assert data[path.name] == path.read_text(), f"{path.name} differs from files/lua/{path.name}"


def test_every_file_is_mounted_where_nginx_conf_expects_it():
    manifests = render(CATALOG)
    data = config_map(manifests)
    pod = deployment(manifests)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    items = {i["key"]: i["path"] for i in volume["configMap"]["items"]}
    assert set(items) == set(data)
    for path in LUA_FILES:
        assert items[path.name] == f"lua/{path.name}"
    for name in ("nginx.conf", "routes.json", "gateway.json"):
        assert items[name] == name
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/nginx/gateway" and mount["readOnly"] is True
    assert 'lua_package_path "/etc/nginx/gateway/lua/?.lua;;";' in data["nginx.conf"]
    assert 'config.init("/etc/nginx/gateway")' in data["nginx.conf"]


def test_nginx_conf_is_the_file_with_values_filled_in():
    template = (FILES / "nginx.conf").read_text()
    # Auth on, so that the lines of every conditional block are rendered too.
    conf = config_map(render(merged(CATALOG, {"auth": {"enabled": True, "existingSecret": "k"}})))["nginx.conf"]
    # Lines without template actions come through unchanged and in order (but those of an
    # `else` branch, which these values do not take).
    static, in_else = [], False
    for line in template.splitlines():
        if "{{" in line:
            in_else = "else" in line or (in_else and "end" not in line)
        elif not in_else:
            static.append(line)
    rendered = conf.splitlines()
    pos = 0
    for line in static:
        assert line in rendered[pos:], f"line missing or out of order: {line!r}"
        pos = rendered.index(line, pos) + 1
    assert "listen 8080 default_server;" in conf
    assert "listen 9145;" in conf
    assert "client_max_body_size 64m;" in conf
    assert "proxy_read_timeout 3600s;" in conf


def test_nginx_conf_has_no_user_and_writes_only_to_the_temp_dir():
    conf = config_map(render(merged(CATALOG, {"paths": {"tempDir": "/scratch"}})))["nginx.conf"]
    directives = [line.strip() for line in conf.splitlines() if not line.strip().startswith("#")]
    assert not [d for d in directives if d.startswith("user ")]
    assert "pid /scratch/nginx.pid;" in directives
    assert "error_log /dev/stderr warn;" in directives
    assert "access_log /dev/stdout gateway buffer=4096 flush=1s;" in directives
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path /scratch/{temp};" in directives


def test_access_log_and_temp_medium_switches():
    manifests = render(merged(CATALOG, {"accessLog": {"enabled": False}, "tempDirMedium": "Memory"}))
    conf = config_map(manifests)["nginx.conf"]
    assert "access_log off;" in conf and "access_log /dev/stdout" not in conf
    unbuffered = config_map(render(merged(CATALOG, {"accessLog": {"bufferBytes": 0}})))["nginx.conf"]
    assert "access_log /dev/stdout gateway;" in unbuffered
    slow = config_map(render(merged(CATALOG, {"accessLog": {"flushSeconds": 5}})))["nginx.conf"]
    assert "access_log /dev/stdout gateway buffer=4096 flush=5s;" in slow
    pod = deployment(manifests)["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert (
        "medium"
        not in next(
            v for v in deployment(render(CATALOG))["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"
        )["emptyDir"]
    )


def test_debian_values_load_the_lua_module_at_the_top():
    conf = config_map(render(merged(CATALOG, DEBIAN)))["nginx.conf"]
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert lines[:2] == [
        "load_module /usr/lib/nginx/modules/ndk_http_module.so;",
        "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;",
    ]
    assert (
        'lua_package_path "/etc/nginx/gateway/lua/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";'
    ) in conf
    assert 'lua_package_cpath "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";' in conf
    assert "load_module" not in config_map(render(CATALOG))["nginx.conf"]
    assert "lua_package_cpath" not in config_map(render(CATALOG))["nginx.conf"]


def test_streaming_settings_and_no_retries_after_send():
    conf = config_map(render(CATALOG))["nginx.conf"]
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Connection $gateway_upstream_connection;",
        "proxy_buffering off;",
        "proxy_cache off;",
        "gzip off;",
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream_tries 3;",
        "add_header X-Accel-Buffering $gateway_accel_buffering always;",
        "add_header X-Gateway-Model $gateway_model always;",
        "proxy_set_header X-Gateway-Model $gateway_upstream_model;",
        "proxy_hide_header X-Gateway-Model;",
    ):
        assert directive in conf, directive
    # Never non_idempotent: nginx resends no POST it has sent (a generation would run twice).
    assert "non_idempotent" not in conf
    assert (
        "proxy_next_upstream_tries 5;"
        in config_map(render(merged(CATALOG, {"balancing": {"maxTries": 5}})))["nginx.conf"]
    )


def test_every_lua_phase_is_a_two_line_shim():
    conf = config_map(render(CATALOG))["nginx.conf"]
    blocks = conf.split("_by_lua_block {")[1:]
    assert len(blocks) >= 8
    for block in blocks:
        body = [line.strip() for line in block.split("}")[0].strip().splitlines()]
        assert len(body) == 2, body
        assert body[0].startswith("local ") and '= require "gateway_' in body[0], body
    assert "_by_lua_file" not in conf


# --- the routing table --------------------------------------------------------------------


def test_routes_cover_both_kinds_with_aliases_and_leave_disabled_models_out():
    table = routes(render(CATALOG, namespace="llm"))
    by_name = {r["name"]: r for r in table["routes"]}
    assert list(by_name) == ["qwen", "tiny"]
    assert by_name["qwen"]["aliases"] == ["Qwen/Qwen2.5-1.5B-Instruct"]
    assert by_name["qwen"]["kind"] == "vllm" and by_name["tiny"]["kind"] == "ramalama"
    # Pods are found at run time through the headless Services' SRV records.
    assert by_name["qwen"]["discovery"] == {"srv": "_http._tcp.vllm-qwen-pods.llm.svc.cluster.local"}
    assert by_name["tiny"]["discovery"] == {"srv": "_http._tcp.ramalama-tiny-pods.llm.svc.cluster.local"}
    assert by_name["qwen"]["host"] == "vllm-qwen.llm.svc.cluster.local"
    assert by_name["qwen"]["healthPath"] == "/health"
    assert by_name["qwen"]["balancing"]["policy"] == "least-request"
    # llama-server closes after every stream: its streams ask for Connection: close.
    assert by_name["tiny"]["closeAfterStream"] is True and by_name["qwen"]["closeAfterStream"] is False


def test_one_upstream_whose_peer_lua_picks_with_keepalive_per_pod():
    conf = config_map(render(CATALOG, namespace="llm"))["nginx.conf"]
    upstreams = re.findall(r"^\s*upstream (\S+) \{", conf, re.M)
    assert upstreams == ["gateway_models"], upstreams
    block = conf.split("upstream gateway_models {")[1].split("\n    }")[0]
    assert "balancer_by_lua_block" in block and "keepalive 128;" in block and "keepalive_timeout 4s;" in block
    assert "proxy_pass http://gateway_models$uri$is_args$args;" in conf
    # No model's address is in nginx.conf: nginx starts whatever exists in the cluster.
    assert "retired" not in conf and "qwen" not in conf and "svc.cluster.local" not in conf


def test_model_namespace_and_cluster_domain_reach_the_names():
    values = merged(CATALOG, {"global": {"modelNamespace": "models"}, "routing": {"clusterDomain": "corp.local"}})
    for route in routes(render(values, namespace="gw"))["routes"]:
        assert route["discovery"]["srv"].endswith("-pods.models.svc.corp.local"), route
        assert route["host"].endswith(".models.svc.corp.local"), route


def test_endpoints_override_discovery_with_one_or_more_servers():
    values = merged(
        CATALOG,
        {"routing": {"endpoints": {"tiny": "127.0.0.1:9001", "qwen": ["10.1.0.1:8000", "vllm.example.com:8000"]}}},
    )
    by_name = {r["name"]: r for r in routes(render(values))["routes"]}
    assert by_name["tiny"]["discovery"] == {"servers": [{"host": "127.0.0.1", "port": 9001}]}
    assert by_name["tiny"]["host"] == "127.0.0.1"
    assert by_name["qwen"]["discovery"] == {
        "servers": [{"host": "10.1.0.1", "port": 8000}, {"host": "vllm.example.com", "port": 8000}]
    }


def test_an_entry_overrides_the_balancing_key_by_key_and_its_health_path_reaches_the_route():
    own = {"policy": "prefix", "prefixLength": 512, "warmSeconds": 60}
    catalog = {"models": [dict(QWEN, healthPath="/ping", balancing=own), TINY]}
    values = merged(catalog, {"balancing": {"policy": "round-robin", "loadFactor": 2}})
    by_name = {r["name"]: r for r in routes(render(values))["routes"]}
    assert by_name["qwen"]["balancing"] == {
        "policy": "prefix",
        "prefixLength": 512,
        "loadFactor": 2,
        "warmLoadFactor": 2,
        "warmSeconds": 60,
        "sessionHeader": "X-Session-Id",
        "sessionField": "user",
        "maxTries": 3,
    }
    assert by_name["qwen"]["healthPath"] == "/ping"
    assert by_name["tiny"]["balancing"]["policy"] == "round-robin"
    assert by_name["tiny"]["healthPath"] == "/health"


def test_an_entry_overrides_the_hold_key_by_key_and_adapters_reach_the_route():
    adapters = [{"name": "sql", "huggingfaceId": "org/sql-lora"}, {"name": "chat", "path": "adapters/chat"}]
    catalog = {"models": [dict(QWEN, hold={"timeoutSeconds": 300}, adapters=adapters), TINY]}
    by_name = {r["name"]: r for r in routes(render(merged(catalog, {"hold": {"maxRequests": 7}})))["routes"]}
    assert by_name["qwen"]["hold"] == {"timeoutSeconds": 300, "maxRequests": 7}
    assert by_name["tiny"]["hold"] == {"timeoutSeconds": 0, "maxRequests": 7}
    assert by_name["qwen"]["adapters"] == [
        {"name": "sql", "source": "org/sql-lora"},
        {"name": "chat", "source": "/data/adapters/chat"},
    ]
    assert by_name["tiny"]["adapters"] == []


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("", "qwen"),  # the first enabled model (the disabled one before it does not count)
        ("tinyllama", "tiny"),  # an alias resolves to its model
        ("tiny", "tiny"),
        ("none", ""),
    ],
)
def test_default_model(setting, expected):
    table = routes(render(merged(CATALOG, {"routing": {"defaultModel": setting}})))
    assert table["defaultModel"] == expected


def test_empty_catalog_renders_a_gateway_without_routes():
    manifests = render({"models": []})
    assert routes(manifests) == {"defaultModel": "", "routes": []}


def test_gateway_settings_file():
    values = merged(
        CATALOG,
        {
            "body": {"maxSize": "16m"},
            "healthCheck": {"intervalSeconds": 7, "retryAfterSeconds": 9},
            "routing": {"discovery": {"intervalSeconds": 3, "servers": ["10.96.0.10"]}},
            "metrics": {"port": 9999},
            "auth": {"enabled": True, "existingSecret": "keys"},
        },
    )
    settings = json.loads(config_map(render(values))["gateway.json"])
    assert settings["body"]["maxSize"] == "16m"
    assert settings["healthCheck"] == {
        "enabled": True,
        "intervalSeconds": 7,
        "timeoutSeconds": 2,
        "failTimeoutSeconds": 10,
        "retryAfterSeconds": 9,
    }
    assert settings["discovery"] == {"intervalSeconds": 3, "timeoutMs": 2000, "servers": ["10.96.0.10"]}
    # 0 (the default): the gateway uses intervalSeconds as the Retry-After of a 503.
    assert json.loads(config_map(render(CATALOG))["gateway.json"])["healthCheck"]["retryAfterSeconds"] == 0
    assert settings["auth"] == {"enabled": True, "keysFile": "/etc/nginx/gateway-secrets/api-keys.json"}


# --- a change rolls the pods ----------------------------------------------------------------


def test_checksum_changes_with_the_config_and_not_with_the_catalog_the_pods_reload():
    base = checksum(render(CATALOG))
    assert checksum(render(CATALOG)) == base
    assert checksum(render(merged(CATALOG, {"replicaCount": 5}))) == base
    # routes.json: reloaded in place by the running pods (routing.reload), no roll.
    assert checksum(render({"models": [QWEN]})) == base
    assert checksum(render({"models": [QWEN, dict(TINY, aliases=["other"])]})) == base
    assert checksum(render(merged(CATALOG, {"routing": {"defaultModel": "tiny"}}))) == base
    assert checksum(render(merged(CATALOG, {"body": {"maxSize": "1m"}}))) != base
    assert checksum(render(merged(CATALOG, {"routing": {"reload": {"intervalSeconds": 9}}}))) != base


def test_with_reload_off_a_catalog_change_rolls_the_pods():
    off = {"routing": {"reload": {"intervalSeconds": 0}}}
    base = checksum(render(merged(CATALOG, off)))
    assert checksum(render(merged({"models": [QWEN]}, off))) != base
    assert checksum(render(merged(CATALOG, off, {"routing": {"defaultModel": "tiny"}}))) != base


@pytest.fixture
def chart_copy(tmp_path):
    copy = tmp_path / "api-gateway"
    shutil.copytree(CHART, copy)
    shutil.copytree(CHART.parent / "model-catalog", tmp_path / "model-catalog")
    return copy


def test_checksum_changes_when_a_lua_file_changes(chart_copy):
    base = checksum(render(CATALOG, chart=chart_copy))
    module = chart_copy / "files" / "lua" / "gateway_router.lua"
    module.write_text(module.read_text() + "-- changed\n")
    manifests = render(CATALOG, chart=chart_copy)
    assert checksum(manifests) != base
    assert config_map(manifests)["gateway_router.lua"].endswith("-- changed\n")


def test_checksum_changes_when_nginx_conf_changes(chart_copy):
    base = checksum(render(CATALOG, chart=chart_copy))
    conf = chart_copy / "files" / "nginx.conf"
    conf.write_text(conf.read_text() + "# changed\n")
    assert checksum(render(CATALOG, chart=chart_copy)) != base


# --- the pod --------------------------------------------------------------------------------


def test_pod_is_hardened_by_default():
    pod = deployment(render(CATALOG))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["tmp"] == "/tmp/nginx"
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "tmp")


def test_container_runs_the_configured_nginx_in_the_foreground():
    container = deployment(render(merged(CATALOG, {"nginx": {"binary": "/usr/sbin/nginx"}})))["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["command"] == ["/usr/sbin/nginx"]
    assert container["args"] == [
        "-p",
        "/tmp/nginx/",
        "-e",
        "/dev/stderr",
        "-c",
        "/etc/nginx/gateway/nginx.conf",
        "-g",
        "daemon off;",
    ]
    assert container["image"] == "openresty/openresty:1.27.1.2-0-bookworm"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "metrics": 9145}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "QUIT" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])


def test_service_name_and_port_come_from_global_gateway():
    values = merged(CATALOG, {"global": {"gateway": {"serviceName": "llm-api", "port": 8000}}})
    service = get(render(values), "Service", "llm-api")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"http": (8000, "http"), "metrics": (9145, "metrics")}
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "api-gateway",
        "app.kubernetes.io/instance": "test",
    }


# --- API keys -------------------------------------------------------------------------------


def test_auth_mounts_the_existing_secret_and_keeps_keys_from_backends():
    values = merged(CATALOG, {"auth": {"enabled": True, "existingSecret": "gw-keys", "secretKey": "k.json"}})
    manifests = render(values)
    pod = deployment(manifests)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"] == {"secretName": "gw-keys", "items": [{"key": "k.json", "path": "k.json"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    assert mount["mountPath"] == "/etc/nginx/gateway-secrets" and mount["readOnly"] is True
    conf = config_map(manifests)["nginx.conf"]
    assert 'proxy_set_header Authorization "";' in conf
    assert not find(manifests, "Secret"), "the chart must not render API keys"


def test_without_auth_no_secret_is_mounted_and_authorization_passes_through():
    manifests = render(CATALOG)
    pod = deployment(manifests)["spec"]["template"]["spec"]
    assert "api-keys" not in {v["name"] for v in pod["volumes"]}
    assert 'proxy_set_header Authorization ""' not in config_map(manifests)["nginx.conf"]


# --- API versions across Kubernetes releases ------------------------------------------------

AUTOSCALE = merged(CATALOG, {"autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": True}})


def test_hpa_and_pdb_use_current_apis_by_default():
    manifests = render(AUTOSCALE, kube_version="v1.30.0")
    assert get(manifests, "HorizontalPodAutoscaler", "test-api-gateway")["apiVersion"] == "autoscaling/v2"
    assert get(manifests, "PodDisruptionBudget", "test-api-gateway")["apiVersion"] == "policy/v1"
    assert "replicas" not in deployment(manifests)["spec"]


def test_hpa_and_pdb_fall_back_on_kubernetes_1_20():
    # What a 1.20 API server advertises: only the beta versions of both.
    manifests = render(
        AUTOSCALE,
        kube_version="v1.20.0",
        api_versions=["autoscaling/v2beta2/HorizontalPodAutoscaler", "policy/v1beta1/PodDisruptionBudget"],
    )
    hpa = get(manifests, "HorizontalPodAutoscaler", "test-api-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2beta2"
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert get(manifests, "PodDisruptionBudget", "test-api-gateway")["apiVersion"] == "policy/v1beta1"


def test_hpa_and_pdb_prefer_v1_and_v2_when_a_cluster_serves_both():
    manifests = render(
        AUTOSCALE,
        kube_version="v1.23.0",
        api_versions=[
            "autoscaling/v2beta2/HorizontalPodAutoscaler",
            "autoscaling/v2/HorizontalPodAutoscaler",
            "policy/v1beta1/PodDisruptionBudget",
            "policy/v1/PodDisruptionBudget",
        ],
    )
    assert get(manifests, "HorizontalPodAutoscaler", "test-api-gateway")["apiVersion"] == "autoscaling/v2"
    assert get(manifests, "PodDisruptionBudget", "test-api-gateway")["apiVersion"] == "policy/v1"


def test_no_hpa_or_pdb_when_off():
    manifests = render(merged(CATALOG, {"podDisruptionBudget": {"enabled": False}}))
    assert not find(manifests, "HorizontalPodAutoscaler")
    assert not find(manifests, "PodDisruptionBudget")
    assert deployment(manifests)["spec"]["replicas"] == 2


# --- NetworkPolicies ------------------------------------------------------------------------


def test_no_network_policy_by_default():
    assert not find(render(CATALOG), "NetworkPolicy")


def test_network_policies_let_only_the_gateway_reach_the_models():
    manifests = render(merged(CATALOG, {"networkPolicy": {"enabled": True}}), namespace="llm")
    gateway = get(manifests, "NetworkPolicy", "test-api-gateway")
    assert gateway["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "api-gateway",
        "app.kubernetes.io/instance": "test",
    }
    api, metrics = gateway["spec"]["ingress"]
    assert api["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert api["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "openwebui"}}}]
    assert "from" not in metrics  # any scraper, unless metricsFrom says otherwise

    models = get(manifests, "NetworkPolicy", "test-api-gateway-models")
    assert models["metadata"]["namespace"] == "llm"
    selector = models["spec"]["podSelector"]
    assert selector["matchLabels"] == {"app.kubernetes.io/part-of": "llm-stack"}
    assert selector["matchExpressions"] == [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["vllm-models", "ramalama-models"]}
    ]
    assert models["spec"]["policyTypes"] == ["Ingress"]
    assert models["spec"]["ingress"] == [
        {
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "api-gateway", "app.kubernetes.io/instance": "test"}
                    }
                }
            ]
        }
    ]


def test_models_in_another_namespace_admit_the_gateway_namespace():
    values = merged(
        CATALOG,
        {
            "global": {"modelNamespace": "models"},
            "networkPolicy": {
                "enabled": True,
                "models": {"extraFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
            },
        },
    )
    models = get(render(values, namespace="gw"), "NetworkPolicy", "test-api-gateway-models")
    assert models["metadata"]["namespace"] == "models"
    peers = models["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "gw"}}
    assert peers[1] == {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}


def test_model_network_policy_can_be_left_to_the_model_charts():
    values = merged(CATALOG, {"networkPolicy": {"enabled": True, "models": {"enabled": False}}})
    assert [n["metadata"]["name"] for n in find(render(values), "NetworkPolicy")] == ["test-api-gateway"]


# --- metrics --------------------------------------------------------------------------------


def test_service_monitor_scrapes_the_metrics_port():
    values = merged(CATALOG, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = get(render(values), "ServiceMonitor", "test-api-gateway")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert not find(render(CATALOG), "ServiceMonitor")


# --- values the chart refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"routing": {"defaultModel": "nope"}}, 'routing.defaultModel ("nope")'),
        ({"routing": {"defaultModel": "retired"}}, 'routing.defaultModel ("retired")'),
        ({"auth": {"enabled": True}}, "auth.existingSecret"),
        ({"routing": {"endpoints": {"retired": "10.0.0.1:80"}}}, "routing.endpoints.retired"),
    ],
)
def test_bad_values_name_the_value(values, message):
    with pytest.raises(HelmError) as err:
        render(merged(CATALOG, values))
    assert message in err.value.stderr


def test_all_problems_are_reported_at_once():
    with pytest.raises(HelmError) as err:
        render(merged(CATALOG, {"routing": {"defaultModel": "nope"}, "auth": {"enabled": True}}))
    assert "routing.defaultModel" in err.value.stderr and "auth.existingSecret" in err.value.stderr


def test_budgets_in_redis_mount_its_password_from_a_secret_and_never_write_it():
    values = merged(
        CATALOG,
        {
            "budgets": {
                "redis": {"address": "redis.llm.svc:6379", "passwordSecret": {"name": "redis-auth"}},
                "failMode": "closed",
            }
        },
    )
    manifests = render(values)
    settings = json.loads(config_map(manifests)["gateway.json"])
    assert settings["budgets"] == {
        "failMode": "closed",
        "keyPrefix": "llm-gateway:",
        "redis": {
            "host": "redis.llm.svc",
            "port": 6379,
            "database": 0,
            "timeoutMs": 250,
            "passwordFile": "/etc/nginx/gateway-redis/password",
        },
    }
    pod = deployment(manifests)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-password")
    assert volume["secret"] == {"secretName": "redis-auth", "items": [{"key": "password", "path": "password"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "redis-password")
    assert mount == {"name": "redis-password", "mountPath": "/etc/nginx/gateway-redis", "readOnly": True}
    # Without Redis: counted in the pod, nothing mounted.
    plain = render(CATALOG)
    assert "redis" not in json.loads(config_map(plain)["gateway.json"])["budgets"]
    assert all(v["name"] != "redis-password" for v in deployment(plain)["spec"]["template"]["spec"]["volumes"])

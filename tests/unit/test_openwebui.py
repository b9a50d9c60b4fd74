"""charts/openwebui: Open WebUI pre-wired to the api-gateway, safe under GitOps (issue 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.render import HelmError, find, get, render_chart

REPO = Path(__file__).resolve().parents[2]
CHART = "openwebui"
NAME = "test-openwebui"  # release "test" + chart name
SECRET_KEY = {"existingSecret": "openwebui-secret", "key": "webui-secret-key"}
REDIS = {"existingSecret": "openwebui-redis", "key": "url"}
DATABASE = {"existingSecret": "openwebui-db", "key": "url"}
SCALED = {
    "replicas": 3,
    "secretKey": SECRET_KEY,
    "redis": REDIS,
    "externalDatabase": DATABASE,
    "persistence": {"accessModes": ["ReadWriteMany"]},
}


def render(values=None, **kwargs):
    return render_chart(CHART, values or {}, **kwargs)


def deployment(manifests):
    return get(manifests, "Deployment", NAME)


def container(manifests):
    [c] = deployment(manifests)["spec"]["template"]["spec"]["containers"]
    return c


def env(manifests) -> dict:
    """Container env by name: the plain value, or the valueFrom block."""
    out = {}
    for e in container(manifests)["env"]:
        assert e["name"] not in out, f"{e['name']} set twice"
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def secret_ref(name, key):
    return {"secretKeyRef": {"name": name, "key": key}}


def fails(values) -> str:
    with pytest.raises(HelmError) as err:
        render(values)
    return err.value.stderr


class TestGatewayWiring:
    def test_base_url_is_the_gateway_service_in_the_release_namespace_by_default(self):
        e = env(render(namespace="chat"))
        assert e["OPENAI_API_BASE_URLS"] == "http://api-gateway.chat.svc.cluster.local:80/v1"
        assert e["ENABLE_OPENAI_API"] == "True"

    def test_base_url_follows_global_gateway(self):
        values = {"global": {"gateway": {"serviceName": "gw", "namespace": "llm-gateway", "port": 8080}}}
        assert env(render(values))["OPENAI_API_BASE_URLS"] == "http://gw.llm-gateway.svc.cluster.local:8080/v1"

    def test_explicit_url_overrides_the_derived_one(self):
        values = {"gateway": {"url": "https://llm.example.com/v1"}}
        assert env(render(values))["OPENAI_API_BASE_URLS"] == "https://llm.example.com/v1"

    def test_ollama_off_values_win_and_model_list_is_bounded(self):
        e = env(render())
        assert e["ENABLE_OLLAMA_API"] == "False"
        assert e["ENABLE_PERSISTENT_CONFIG"] == "False"
        assert e["AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST"] == "10"
        assert env(render({"modelListTimeoutSeconds": 3}))["AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST"] == "3"

    def test_api_key_comes_from_the_named_secret(self):
        e = env(render({"gateway": {"apiKey": {"existingSecret": "gw-keys", "key": "webui"}}}))
        assert e["OPENAI_API_KEYS"] == secret_ref("gw-keys", "webui")

    def test_no_api_key_env_when_the_gateway_needs_none(self):
        assert "OPENAI_API_KEYS" not in env(render())

    def test_api_key_secret_without_key_is_refused(self):
        msg = fails({"gateway": {"apiKey": {"existingSecret": "gw-keys"}}})
        assert 'gateway.apiKey.key: empty while gateway.apiKey.existingSecret is "gw-keys"' in msg


class TestDefaultModel:
    def test_first_enabled_model_of_either_kind(self):
        models = [
            {"modelName": "off", "huggingfaceId": "a/b", "enabled": False},
            {"modelName": "tiny", "gguf": "tiny.gguf"},
            {"modelName": "qwen", "huggingfaceId": "Qwen/Qwen2.5-1.5B-Instruct"},
        ]
        assert env(render({"models": models}))["DEFAULT_MODELS"] == "tiny"

    def test_shared_models_file(self, repo_models):
        first = next(m for m in repo_models if m.get("enabled", True))
        assert env(render(values_files=[repo_models.path]))["DEFAULT_MODELS"] == first["modelName"]

    def test_override_wins(self):
        values = {"models": [{"modelName": "tiny", "gguf": "t.gguf"}], "defaultModels": "a,b"}
        assert env(render(values))["DEFAULT_MODELS"] == "a,b"

    def test_nothing_set_for_an_empty_catalog(self):
        assert "DEFAULT_MODELS" not in env(render({"models": []}))


class TestSecretKeyIsStableUnderGitOps:
    def test_existing_secret_is_referenced(self):
        e = env(render({"secretKey": SECRET_KEY}))
        assert e["WEBUI_SECRET_KEY"] == secret_ref("openwebui-secret", "webui-secret-key")
        assert "WEBUI_SECRET_KEY_FILE" not in e

    def test_without_secret_the_key_file_lives_on_the_data_volume(self):
        manifests = render()
        e = env(manifests)
        assert "WEBUI_SECRET_KEY" not in e
        assert e["WEBUI_SECRET_KEY_FILE"] == "/app/backend/data/.webui_secret_key"
        mounts = {m["mountPath"]: m["name"] for m in container(manifests)["volumeMounts"]}
        assert mounts["/app/backend/data"] == "data"
        assert not find(manifests, "Secret"), "the chart must not render (random) Secrets"

    @pytest.mark.parametrize("helm", ["helm3", "helm4"])
    def test_two_renders_are_identical(self, helm):
        # `helm template` (Argo CD) has no lookup: anything random would differ between these two.
        assert render(helm=helm) == render(helm=helm)

    def test_secret_name_without_key_is_refused(self):
        assert "secretKey.key: empty while secretKey.existingSecret" in fails({"secretKey": {"existingSecret": "s"}})


class TestReplicas:
    def test_single_pod_recreates_and_has_no_redis(self):
        manifests = render()
        assert deployment(manifests)["spec"]["replicas"] == 1
        assert deployment(manifests)["spec"]["strategy"] == {"type": "Recreate"}
        assert {"REDIS_URL", "WEBSOCKET_MANAGER", "DATABASE_URL"}.isdisjoint(env(manifests))

    def test_scaled_with_redis_database_and_shared_volume(self):
        manifests = render(SCALED)
        spec = deployment(manifests)["spec"]
        assert spec["replicas"] == 3
        assert spec["strategy"]["type"] == "RollingUpdate"
        e = env(manifests)
        assert e["REDIS_URL"] == secret_ref("openwebui-redis", "url")
        assert e["WEBSOCKET_MANAGER"] == "redis"
        assert e["ENABLE_WEBSOCKET_SUPPORT"] == "True"
        assert e["DATABASE_URL"] == secret_ref("openwebui-db", "url")
        assert e["WEBUI_SECRET_KEY"] == secret_ref("openwebui-secret", "webui-secret-key")
        assert get(manifests, "PersistentVolumeClaim", f"{NAME}-data")["spec"]["accessModes"] == ["ReadWriteMany"]

    def test_scaled_without_volume_but_external_database(self):
        values = {**SCALED, "persistence": {"enabled": False}}
        manifests = render(values)
        assert not find(manifests, "PersistentVolumeClaim")
        assert deployment(manifests)["spec"]["replicas"] == 3

    def test_scaled_on_an_existing_claim_is_trusted(self):
        values = {**SCALED, "persistence": {"existingClaim": "shared-rwx"}}
        volumes = deployment(render(values))["spec"]["template"]["spec"]["volumes"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-rwx"}} in volumes

    def test_scaled_with_nothing_reports_every_problem_at_once(self):
        msg = fails({"replicas": 2})
        for needle in (
            "replicas: 2 needs Redis",
            "replicas: 2 needs one shared WEBUI_SECRET_KEY",
            "replicas: 2 needs an external database",
            'persistence.accessModes: ["ReadWriteOnce"] cannot be mounted by 2 pods',
        ):
            assert needle in msg
        assert msg.count("invalid values") == 1

    def test_redis_secret_without_key_is_refused(self):
        assert "redis.key: empty while redis.existingSecret" in fails({"redis": {"existingSecret": "r"}})


class TestPersistence:
    def test_pvc_is_kept_on_uninstall(self):
        values = {"persistence": {"size": "20Gi", "storageClass": "fast", "annotations": {"a": "b"}}}
        pvc = get(render(values), "PersistentVolumeClaim", f"{NAME}-data")
        assert pvc["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep",
            "a": "b",
            "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
        }
        assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
        assert pvc["spec"]["storageClassName"] == "fast"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]

    def test_existing_claim_is_used_and_none_created(self):
        manifests = render({"persistence": {"existingClaim": "my-data"}})
        assert not find(manifests, "PersistentVolumeClaim")
        volumes = deployment(manifests)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "my-data"}} in volumes

    def test_disabled_uses_an_empty_dir(self):
        manifests = render({"persistence": {"enabled": False}})
        assert not find(manifests, "PersistentVolumeClaim")
        volumes = deployment(manifests)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "data", "emptyDir": {}} in volumes


class TestServiceAndIngress:
    def test_service_port_80_to_container_8080(self):
        manifests = render()
        [port] = get(manifests, "Service", NAME)["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (80, "http")
        assert container(manifests)["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert (
            get(manifests, "Service", NAME)["spec"]["selector"]
            == deployment(manifests)["spec"]["selector"]["matchLabels"]
        )

    def test_no_ingress_by_default(self):
        assert not find(render(), "Ingress")

    def test_ingress_routes_hosts_to_the_service(self):
        values = {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": [{"host": "chat.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "tls", "hosts": ["chat.example.com"]}],
            }
        }
        ing = get(render(values), "Ingress", NAME)
        assert ing["apiVersion"] == "networking.k8s.io/v1"
        assert ing["spec"]["ingressClassName"] == "nginx"
        [rule] = ing["spec"]["rules"]
        assert rule["host"] == "chat.example.com"
        [path] = rule["http"]["paths"]
        assert path["backend"] == {"service": {"name": NAME, "port": {"name": "http"}}}
        assert ing["spec"]["tls"] == [{"secretName": "tls", "hosts": ["chat.example.com"]}]


class TestProbes:
    def test_health_probes_and_a_startup_budget(self):
        manifests = render()
        c = container(manifests)
        assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/db"
        budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert budget >= 300, "first boot runs migrations: give it minutes"
        assert deployment(manifests)["spec"]["progressDeadlineSeconds"] >= budget

    def test_progress_deadline_follows_a_longer_budget(self):
        manifests = render({"startupProbe": {"periodSeconds": 10, "failureThreshold": 180}})
        assert deployment(manifests)["spec"]["progressDeadlineSeconds"] >= 1800


class TestHardening:
    def test_pod_and_container_security(self):
        manifests = render()
        pod = deployment(manifests)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["fsGroup"] == 1000
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        csc = container(manifests)["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"] == {"drop": ["ALL"]}
        assert csc["readOnlyRootFilesystem"] is True

    def test_writable_tmp_and_home_with_a_read_only_root(self):
        manifests = render()
        mounts = {m["mountPath"]: m["name"] for m in container(manifests)["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment(manifests)["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        home = env(manifests)["HOME"]
        assert "emptyDir" in volumes[mounts[home]]

    def test_image_is_pinned_to_the_app_version(self, chart_meta):
        image = container(render())["image"]
        assert image == f"ghcr.io/open-webui/open-webui:v{chart_meta['appVersion']}"
        assert "latest" not in image

    def test_latest_tag_is_refused(self):
        assert 'image.tag: "latest" floats' in fails({"image": {"tag": "latest"}})

    def test_selector_holds_no_version_or_user_labels(self):
        manifests = render({"podLabels": {"team": "llm"}})
        selector = deployment(manifests)["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert deployment(manifests)["spec"]["template"]["metadata"]["labels"]["team"] == "llm"


class TestOfflineAndRag:
    def test_offline_by_default(self):
        e = env(render())
        assert e["OFFLINE_MODE"] == "True"
        assert e["HF_HUB_OFFLINE"] == "1"
        assert e["RAG_EMBEDDING_MODEL_AUTO_UPDATE"] == "False"
        assert e["RAG_RERANKING_MODEL_AUTO_UPDATE"] == "False"
        assert e["WHISPER_MODEL_AUTO_UPDATE"] == "False"
        assert e["BYPASS_EMBEDDING_AND_RETRIEVAL"] == "True"
        assert "RAG_EMBEDDING_ENGINE" not in e

    def test_online_sets_none_of_the_offline_switches(self):
        e = env(render({"offline": False}))
        assert {"OFFLINE_MODE", "HF_HUB_OFFLINE", "RAG_EMBEDDING_MODEL_AUTO_UPDATE"}.isdisjoint(e)

    def test_embeddings_through_the_gateway(self):
        values = {
            "rag": {"bypassEmbeddingAndRetrieval": False, "embeddingEngine": "openai", "embeddingModel": "emb"},
            "gateway": {"apiKey": {"existingSecret": "gw", "key": "k"}},
        }
        e = env(render(values))
        assert e["BYPASS_EMBEDDING_AND_RETRIEVAL"] == "False"
        assert e["RAG_EMBEDDING_ENGINE"] == "openai"
        assert e["RAG_OPENAI_API_BASE_URL"] == e["OPENAI_API_BASE_URLS"]
        assert e["RAG_OPENAI_API_KEY"] == secret_ref("gw", "k")
        assert e["RAG_EMBEDDING_MODEL"] == "emb"

    def test_gateway_embeddings_need_a_model(self):
        assert "rag.embeddingModel: empty while rag.embeddingEngine is openai" in fails(
            {"rag": {"embeddingEngine": "openai"}}
        )


class TestExtras:
    def test_extra_env_is_appended(self):
        e = env(
            render({"extraEnv": [{"name": "ENABLE_SIGNUP", "value": "False"}], "webuiUrl": "https://chat.example.com"})
        )
        assert e["ENABLE_SIGNUP"] == "False"
        assert e["WEBUI_URL"] == "https://chat.example.com"

    def test_plain_secret_values_are_not_accepted(self):
        assert "secretKey" in fails({"secretKey": {"value": "plain"}})


@pytest.fixture
def chart_meta():
    return yaml.safe_load((REPO / "charts" / CHART / "Chart.yaml").read_text())


class _Models(list):
    path = None


@pytest.fixture
def repo_models():
    path = REPO / "models.yaml"
    models = _Models(yaml.safe_load(path.read_text())["models"])
    models.path = path
    return models

"""The GitOps golden path: argocd/ (the llm-stack app of apps), istio/ (llm-istio) and gateway-api/
(llm-gateway-api).

Every Application is rendered the way Argo CD renders it (tests/gitops/argo.py: path in this
repository, `$values/models.yaml` from the `ref: values` source, valuesObject, parameters, release
name, destination namespace) and what it deploys passes the harness checks. The generic chart
rules (Helm 3 = Helm 4, strict schemas, names, lint, README tables, yamllint) cover these three
charts through harness.paths.charts(), as they cover charts/* (test_charts.py, `nox -s lint`).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import yaml

from gitops.argo import ApplicationError, render_application, sources, value_files
from harness import paths
from harness.render import (
    HELM_VERSIONS,
    HelmError,
    find,
    get,
    parse_manifests,
    render_text,
)
from harness.validate import KUBE_VERSIONS, ManifestError, check_names, crd_schemas, validate_manifest

REPO = paths.REPO
ARGOCD, ISTIO, GATEWAY_API = REPO / "argocd", REPO / "istio", REPO / "gateway-api"
OWN_CHARTS = (ARGOCD, ISTIO, GATEWAY_API)
MODELS = REPO / "models.yaml"
STACK = ("vllm-models", "ramalama-models", "api-gateway", "openwebui")
EXPOSURE = ("llm-istio", "llm-gateway-api")
NEWEST = KUBE_VERSIONS[-1]
# Retries that fire before a request reached a backend: the only ones that cannot run a generation twice.
SAFE_RETRY_ON = {"connect-failure", "refused-stream", "reset-before-request"}

OWN_CI = sorted(f for chart in OWN_CHARTS for f in (chart / "ci").glob("*-values.yaml"))
STACK_CI = sorted((ARGOCD / "ci").glob("*-values.yaml"))


def _chart(ci_file: Path) -> Path:
    return ci_file.parent.parent


@functools.cache
def _render(
    chart: Path,
    files: tuple = (),
    helm: str = "helm3",
    kube: str | None = None,
    release: str = "test",
    namespace: str = "llm",
    api_versions: tuple = (),
    values_json: str = "null",
) -> str:
    return render_text(
        chart,
        json.loads(values_json),
        values_files=list(files),
        helm=helm,
        kube_version=kube,
        release=release,
        namespace=namespace,
        api_versions=api_versions,
    )


def render(chart: Path, values: dict | None = None, files=(), **kw) -> list[dict]:
    return parse_manifests(_render(chart, tuple(str(f) for f in files), values_json=json.dumps(values), **kw))


def stack(ci_file: Path | None = None, values: dict | None = None) -> list[dict]:
    """What the app of apps renders (as bootstrapped: release llm-stack in namespace argocd)."""
    return render(ARGOCD, values, files=[ci_file] if ci_file else [], release="llm-stack", namespace="argocd")


def applications(manifests: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in find(manifests, "Application")}


def chart_values(chart: Path) -> dict:
    return yaml.safe_load((chart / "values.yaml").read_text())


def merged(base: dict, override: dict) -> dict:
    """Helm's merge of a values file over the chart's values."""
    out = dict(base)
    for key, value in (override or {}).items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(params=STACK_CI, ids=[p.name for p in STACK_CI])
def stack_ci(request):
    return request.param


BAD_VALUES = [
    (ARGOCD, {"applications": {"extra": {"enabled": True}}}, "missing property 'path'"),
    (ARGOCD, {"applications": {"extra": {"path": "../elsewhere"}}}, "applications"),
    (ARGOCD, {"applications": {"Bad_Name": {"path": "charts/x"}}}, "Bad_Name"),
    (
        ARGOCD,
        {"applications": {"secrets": {"enabled": True, "path": "x", "directory": True, "valuesObject": {"a": 1}}}},
        "applications.secrets: directory=true",
    ),
    (ARGOCD, {"selfManage": {"enabled": True, "name": "openwebui"}}, "selfManage.name"),
    (ARGOCD, {"sharedValueFiles": ["/etc/models.yaml"]}, "sharedValueFiles"),
    (ISTIO, {"gateway": {"create": False, "existing": ""}}, "gateway.existing: empty while gateway.create=false"),
    (ISTIO, {"gateway": {"tls": {"enabled": True}}}, "gateway.tls.credentialName: empty"),
    (ISTIO, {"routes": {"retries": {"attempts": 2, "retryOn": "5xx"}}}, "retryOn"),
    (ISTIO, {"routes": {"timeout": "forever"}}, "timeout"),
    (
        ISTIO,
        {"models": [{"modelName": "a"}, {"modelName": "a", "gguf": "a.gguf"}]},
        'name or alias "a" is already used',
    ),
    (GATEWAY_API, {}, "gateway.className: empty while gateway.create=true"),
    (GATEWAY_API, {"gateway": {"create": False}}, "gateway.existing.name: empty"),
    (GATEWAY_API, {"gateway": {"className": "x", "tls": {"enabled": True}}}, "gateway.tls.secretName: empty"),
    (GATEWAY_API, {"gateway": {"className": "x"}, "routes": {"timeouts": {"request": "1 hour"}}}, "request"),
]


@pytest.mark.parametrize("helm", HELM_VERSIONS)
@pytest.mark.parametrize(
    "chart,values,message", BAD_VALUES, ids=[f"{c.name}-{i}" for i, (c, _, _) in enumerate(BAD_VALUES)]
)
def test_bad_values_are_rejected_with_a_message_naming_the_key(chart, values, message, helm):
    with pytest.raises(HelmError) as err:
        render_text(chart, values, helm=helm)
    assert message in err.value.stderr


# --- Every Application, rendered as Argo CD renders it --------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_application_renders_as_argo_cd_would_and_passes_the_checks(stack_ci, kube_version):
    apps = applications(stack(stack_ci))
    assert apps
    for name, app in apps.items():
        manifests = render_application(app, kube_version=f"v{kube_version}.0")
        assert manifests, f"{name}: renders nothing"
        for m in manifests:
            try:
                validate_manifest(m, kube_version)
            except ManifestError as exc:
                raise AssertionError(f"Application {name}: {exc}") from None
        assert not check_names(manifests), (name, check_names(manifests))


def test_the_default_stack_deploys_the_four_charts_from_the_shared_list():
    apps = applications(stack())
    assert set(STACK) <= set(apps)
    for name in STACK:
        chart, ref = sources(apps[name])
        assert chart["path"] == f"charts/{name}"
        assert chart["helm"]["releaseName"] == name
        assert chart["helm"]["valueFiles"] == ["$values/models.yaml"]
        assert value_files(apps[name], chart) == [MODELS]
        assert ref == {"repoURL": chart["repoURL"], "targetRevision": chart["targetRevision"], "ref": "values"}
    assert not set(EXPOSURE) & set(apps), "exposure is opt-in"


def test_applications_follow_the_golden_path(stack_ci):
    values = merged(chart_values(ARGOCD), yaml.safe_load(stack_ci.read_text()))
    manifests = stack(stack_ci)
    for name, app in applications(manifests).items():
        spec = app["spec"]
        assert app["metadata"]["namespace"] == "argocd"
        assert spec["project"] == values["project"]
        assert spec["destination"]["server"] == "https://kubernetes.default.svc"
        empty = {"allowEmpty": True} if values["applications"].get(name, {}).get("allowEmpty") else {}
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True, **empty}, name
        for source in sources(app):
            assert source["repoURL"] == values["repoURL"], name
            assert source["targetRevision"] == values["targetRevision"], name
        if values["selfManage"]["enabled"] and name == values["selfManage"]["name"]:
            continue
        assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
        assert ("resources-finalizer.argocd.argoproj.io" in app["metadata"].get("finalizers", [])) == values[
            "cascadeDelete"
        ]
    projects = find(manifests, "AppProject")
    if values.get("appProject", {}).get("create"):
        (project,) = projects
        assert project["spec"]["sourceRepos"] == [values["repoURL"]]
        wanted = {a["spec"]["destination"]["namespace"] for a in applications(manifests).values()}
        assert wanted <= {d["namespace"] for d in project["spec"]["destinations"]}
    else:
        assert not projects


def test_parameters_and_values_object_reach_the_chart():
    apps = applications(stack(ARGOCD / "ci" / "full-values.yaml"))
    ui = render_application(apps["openwebui"])
    url = {
        e["name"]: e.get("value")
        for e in get(ui, "Deployment", "openwebui")["spec"]["template"]["spec"]["containers"][0]["env"]
    }["OPENAI_API_BASE_URLS"]
    assert "api-gateway.ai.svc" in url, "parameters (global.gateway.namespace=ai) must beat models.yaml"
    assert {m["metadata"]["namespace"] for m in ui if "namespace" in m["metadata"]} == {"ai-ui"}
    vs = get(render_application(apps["llm-istio"]), "VirtualService", "llm-istio")
    ui_route = next(r for r in vs["spec"]["http"] if r["name"] == "ui")
    assert ui_route["route"][0]["destination"]["host"] == "openwebui.ai-ui.svc.cluster.local"


def test_sync_waves_put_models_before_the_gateway_before_the_ui():
    apps = applications(
        stack(
            values={
                "applications": {
                    n: {"enabled": True, "path": p}
                    for n, p in (("llm-istio", "istio"), ("llm-gateway-api", "gateway-api"))
                }
            }
        )
    )

    def wave(name):
        return int(apps[name]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])

    assert wave("vllm-models") == wave("ramalama-models") < wave("api-gateway") < wave("openwebui")
    assert wave("openwebui") < wave("llm-istio") and wave("openwebui") < wave("llm-gateway-api")
    project = get(stack(values={"appProject": {"create": True}}), "AppProject", "default")
    assert int(project["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) < wave("vllm-models")


def test_the_model_charts_may_sync_to_empty_and_the_others_may_not():
    """Removing the last model of a kind empties that chart's render; Argo CD's automated sync
    refuses an empty target ("auto-sync will wipe out all resources", found by the e2e) unless
    allowEmpty. Only the model charts, whose empty render is a real state, get it."""
    apps = applications(stack())
    for name in ("vllm-models", "ramalama-models"):
        assert apps[name]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True, "allowEmpty": True}
    for name in ("api-gateway", "openwebui"):
        assert "allowEmpty" not in apps[name]["spec"]["syncPolicy"]["automated"], name
    off = applications(
        stack(values={"applications": {"vllm-models": {"path": "charts/vllm-models", "allowEmpty": False}}})
    )
    assert "allowEmpty" not in off["vllm-models"]["spec"]["syncPolicy"]["automated"]
    # Without automated sync there is nothing to allow.
    manual = applications(stack(values={"syncPolicy": {"automated": None}}))
    assert "automated" not in manual["vllm-models"]["spec"]["syncPolicy"]


def test_the_gateway_autoscaler_owns_its_replicas():
    app = applications(stack())["api-gateway"]
    assert {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]} in app["spec"][
        "ignoreDifferences"
    ]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    for name, other in applications(stack()).items():
        if name != "api-gateway":
            assert "ignoreDifferences" not in other["spec"], name
    # The HPA the chart renders targets a Deployment of this Application.
    app["spec"]["sources"][0]["helm"]["valuesObject"] = {"autoscaling": {"enabled": True}}
    manifests = render_application(app, kube_version=f"v{NEWEST}.0")
    (hpa,) = find(manifests, "HorizontalPodAutoscaler")
    get(manifests, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])


@pytest.mark.parametrize("app_name", ["vllm-models", "openwebui"])
def test_caches_survive_argo_cd_prune_and_delete(app_name):
    """Argo CD ignores helm.sh/resource-policy: each PVC must say Prune=false,Delete=false itself."""
    pvcs = find(render_application(applications(stack())[app_name]), "PersistentVolumeClaim")
    assert pvcs
    for pvc in pvcs:
        name = pvc["metadata"]["name"]
        annotations = pvc["metadata"].get("annotations") or {}
        assert annotations.get("helm.sh/resource-policy") == "keep", name
        options = {o.strip() for o in annotations.get("argocd.argoproj.io/sync-options", "").split(",")}
        assert {"Prune=false", "Delete=false"} <= options, f"{name}: sync-options {sorted(options)}"


def _built(path: Path) -> bool:
    """argocd/charts/: the model-catalog library as `helm dependency build` unpacks it (gitignored)."""
    return path.relative_to(ARGOCD).parts[0] == "charts"


def test_the_repository_url_is_typed_once():
    default = chart_values(ARGOCD)["repoURL"]
    hits = [
        (p.relative_to(REPO), line)
        for p in sorted(ARGOCD.rglob("*"))
        if p.is_file() and p.name != "README.md" and not _built(p)
        for line in p.read_text().splitlines()
        if default in line
    ]
    assert hits == [(Path("argocd/values.yaml"), f"repoURL: {default}")]
    fork = "https://git.example.com/me/llm-charts.git"
    text = yaml.safe_dump_all(stack(ARGOCD / "ci" / "minimal-values.yaml"))
    assert default not in text and fork in text


def test_the_self_managed_root_application_renders_the_stack_with_the_same_repository():
    fork = "https://git.example.com/me/llm-charts.git"
    manifests = stack(ARGOCD / "ci" / "minimal-values.yaml")
    root = applications(manifests)["llm-stack"]
    assert sources(root)[0]["path"] == "argocd"
    assert root["spec"]["destination"]["namespace"] == "argocd"
    again = applications(render_application(root))
    assert again.keys() == applications(manifests).keys()
    assert all(s["repoURL"] == fork for a in again.values() for s in sources(a))


def test_no_model_name_is_typed_in_argocd():
    catalog = yaml.safe_load(MODELS.read_text())["models"]
    names = {n for m in catalog for n in [m["modelName"], *m.get("aliases", [])]}
    assert names
    for path in sorted(ARGOCD.rglob("*")):
        if path.is_file() and not _built(path):
            text = path.read_text()
            typed = sorted(n for n in names if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])", text))
            assert not typed, f"{path.relative_to(REPO)} names {typed}; models.yaml is the only model list"


def test_a_prerequisites_application_of_plain_manifests_comes_first():
    path = "tests/gitops/fixtures/prerequisites"
    apps = applications(
        stack(
            values={
                "applications": {"prerequisites": {"enabled": True, "path": path, "directory": True, "syncWave": -1}}
            }
        )
    )
    app = apps["prerequisites"]
    assert app["spec"]["source"] == {
        "repoURL": chart_values(ARGOCD)["repoURL"],
        "targetRevision": "main",
        "path": path,
        "directory": {"recurse": True},
    }
    validate_manifest(app, NEWEST)
    (cm,) = render_application(app)
    assert cm["kind"] == "ConfigMap"
    waves = {
        n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for n, a in apps.items()
        if n != "llm-stack"
    }
    assert min(waves, key=waves.get) == "prerequisites"


def test_value_files_outside_the_ref_source_are_refused():
    app = applications(stack())["vllm-models"]
    app["spec"]["sources"][0]["helm"]["valueFiles"] = ["$other/models.yaml"]
    with pytest.raises(ApplicationError, match="no source has `ref: other`"):
        render_application(app)
    app["spec"]["sources"][0]["helm"]["valueFiles"] = ["$values/missing.yaml"]
    with pytest.raises(ApplicationError, match="not found"):
        render_application(app)


# --- One model list drives the models, the gateway's routing table and Open WebUI -----------------


def _stack_objects(values_root: Path | None, extra: dict | None = None) -> dict[str, list[dict]]:
    apps = applications(stack(values=extra))
    return {name: render_application(app, values_root=values_root) for name, app in apps.items()}


def _routes(api_gateway: list[dict]) -> list[dict]:
    (cm,) = [m for m in find(api_gateway, "ConfigMap") if "routes.json" in (m.get("data") or {})]
    table = json.loads(cm["data"]["routes.json"])
    return table["routes"] if isinstance(table, dict) else table


def _route_names(api_gateway: list[dict]) -> set[str]:
    names = set()
    for r in _routes(api_gateway):
        names |= {r["name"], *r.get("aliases", [])}
    return names


def _ui_env(openwebui: list[dict]) -> dict[str, str]:
    (workload,) = [m for m in openwebui if m["kind"] in ("Deployment", "StatefulSet")]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_changing_the_shared_list_changes_models_routes_and_ui(tmp_path):
    catalog = yaml.safe_load(MODELS.read_text())
    old = catalog["models"][0]
    assert "gguf" not in old, "the test renames the first (vLLM) model"
    renamed = dict(old, modelName="renamed-model")
    added = {"modelName": "added-model", "huggingfaceId": "example/added-model"}
    catalog["models"] = [renamed, *catalog["models"][1:], added]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(catalog))
    extra = {"applications": {"llm-istio": {"enabled": True, "path": "istio"}}}

    before = _stack_objects(None, extra)
    after = _stack_objects(tmp_path, extra)

    # The model chart: Deployments and Services follow the list.
    for kind in ("Deployment", "Service"):
        names = {m["metadata"]["name"] for m in find(after["vllm-models"], kind)}
        assert {"vllm-renamed-model", "vllm-added-model"} <= names
        assert f"vllm-{old['modelName']}" not in names
        assert f"vllm-{old['modelName']}" in {m["metadata"]["name"] for m in find(before["vllm-models"], kind)}
    # The gateway's routing table (routes.json in its ConfigMap).
    assert old["modelName"] in _route_names(before["api-gateway"])
    routed = _route_names(after["api-gateway"])
    assert {"renamed-model", "added-model"} <= routed and old["modelName"] not in routed
    # The gateway finds their pods through their headless Services.
    lookups = {r["discovery"].get("srv", "") for r in _routes(after["api-gateway"])}
    assert {
        "_http._tcp.vllm-renamed-model-pods.llm.svc.cluster.local",
        "_http._tcp.vllm-added-model-pods.llm.svc.cluster.local",
    } <= lookups, lookups
    # Open WebUI: its default model is the first of the list, its connection is the gateway.
    assert _ui_env(before["openwebui"]).get("DEFAULT_MODELS") == old["modelName"]
    env = _ui_env(after["openwebui"])
    assert env.get("DEFAULT_MODELS") == "renamed-model"
    assert env["OPENAI_API_BASE_URLS"].startswith("http://api-gateway.llm.svc")
    # The mesh routes of the Istio chart (no retries per model) follow too.
    hosts = {vs["spec"]["hosts"][0] for vs in find(after["llm-istio"], "VirtualService")}
    assert {"vllm-renamed-model.llm.svc.cluster.local", "vllm-added-model.llm.svc.cluster.local"} <= hosts

    # api-gateway 1.4.0 reloads a changed routes.json in place: its pod template (checksum
    # annotation included) stays, so the change rolls no gateway pod (tests/e2e/test_gitops.py).
    def template(objs):
        return get(objs, "Deployment", "api-gateway")["spec"]["template"]

    def routes(objs):
        return get(objs, "ConfigMap", "api-gateway")["data"]["routes.json"]

    assert routes(before["api-gateway"]) != routes(after["api-gateway"])
    assert template(before["api-gateway"]) == template(after["api-gateway"])


# --- Istio: routes, timeouts, retries --------------------------------------------------------------


ISTIO_CI = sorted((ISTIO / "ci").glob("*-values.yaml"))


def _istio(files=(), values=None, **kw):
    return render(ISTIO, values, files=[MODELS, *files], **kw)


def _seconds(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@pytest.mark.parametrize("ci", ISTIO_CI, ids=lambda p: p.name)
def test_every_istio_route_has_a_long_timeout_and_no_unsafe_retry(ci):
    values = merged(chart_values(ISTIO), yaml.safe_load(ci.read_text()))
    services = find(_istio([ci]), "VirtualService")
    assert services
    read = chart_values(REPO / "charts" / "api-gateway").get("timeouts", {}).get("readSeconds", 3600)
    for vs in services:
        for route in vs["spec"]["http"]:
            assert _seconds(route["timeout"]) >= read, (vs["metadata"]["name"], route["timeout"])
            retries = route["retries"]
            if retries["attempts"]:
                assert set(retries["retryOn"].split(",")) <= SAFE_RETRY_ON
                assert retries["attempts"] == values["routes"]["retries"]["attempts"]
            else:
                assert "retryOn" not in retries


def test_istio_defaults_send_the_api_to_the_gateway_and_the_rest_to_the_ui():
    manifests = _istio()
    vs = get(manifests, "VirtualService", "test")
    assert vs["spec"]["gateways"] == ["llm/test"]
    api, ui = vs["spec"]["http"]
    assert api["timeout"] == "3600s" and api["retries"] == {"attempts": 0}
    matches = [m["uri"] for m in api["match"]]
    for path in ("/v1", "/tokenize", "/detokenize"):
        assert {"exact": path} in matches and {"prefix": f"{path}/"} in matches
    assert api["route"] == [{"destination": {"host": "api-gateway.llm.svc.cluster.local", "port": {"number": 80}}}]
    assert ui["match"] == [{"uri": {"prefix": "/"}}]
    assert ui["route"][0]["destination"]["host"] == "openwebui.llm.svc.cluster.local"
    gateway = get(manifests, "Gateway", "test")
    assert [s["port"]["protocol"] for s in gateway["spec"]["servers"]] == ["HTTP"]


def test_istio_tls_uses_the_credential_and_redirects_http():
    manifests = _istio(values={"gateway": {"tls": {"enabled": True, "credentialName": "llm-tls"}}})
    http, https = get(manifests, "Gateway", "test")["spec"]["servers"]
    assert http["tls"] == {"httpsRedirect": True}
    assert https["tls"]["credentialName"] == "llm-tls" and https["port"]["number"] == 443


def test_istio_mesh_routes_cover_the_gateway_and_every_enabled_model():
    manifests = _istio([ISTIO / "ci" / "full-values.yaml"])
    mesh = {vs["spec"]["hosts"][0] for vs in find(manifests, "VirtualService") if vs["spec"]["gateways"] == ["mesh"]}
    assert mesh == {
        "api-gateway.llm.svc.cluster.local",
        "vllm-llama-3-1-8b-instruct.llm-models.svc.cluster.local",
        "ramalama-tiny.llm-models.svc.cluster.local",
    }
    assert not find(_istio(values={"mesh": {"enabled": False}}), "VirtualService", "test-api-gateway")


def test_istio_destination_rule_pools_connections_without_outlier_ejection():
    dr = get(_istio(), "DestinationRule", "test-api-gateway")
    policy = dr["spec"]["trafficPolicy"]
    assert dr["spec"]["host"] == "api-gateway.llm.svc.cluster.local"
    assert "outlierDetection" not in policy
    assert policy["connectionPool"]["http"]["maxRetries"] == 0
    assert _seconds(policy["connectionPool"]["http"]["idleTimeout"]) >= 3600


def test_istio_security_examples():
    manifests = _istio([ISTIO / "ci" / "full-values.yaml"])
    assert get(manifests, "PeerAuthentication", "test")["spec"]["mtls"] == {"mode": "STRICT"}
    policy = get(manifests, "AuthorizationPolicy", "test-api-gateway")
    assert policy["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "api-gateway"}
    sources_ = [rule["from"][0]["source"] for rule in policy["spec"]["rules"]]
    assert {"namespaces": ["llm", "llm-ui"]} in sources_
    assert not find(_istio(), "AuthorizationPolicy") and not find(_istio(), "PeerAuthentication")


@pytest.mark.parametrize(
    "api_versions,expected",
    [
        ((), "networking.istio.io/v1"),
        (("networking.istio.io/v1beta1/VirtualService",), "networking.istio.io/v1beta1"),
        (
            ("networking.istio.io/v1beta1/VirtualService", "networking.istio.io/v1/VirtualService"),
            "networking.istio.io/v1",
        ),
    ],
)
def test_istio_api_version_follows_the_cluster(api_versions, expected):
    vs = get(_istio(api_versions=api_versions), "VirtualService", "test")
    assert vs["apiVersion"] == expected
    validate_manifest(vs, NEWEST)


# --- Gateway API: the same exposure without Istio ---------------------------------------------------


GATEWAY_API_CI = sorted((GATEWAY_API / "ci").glob("*-values.yaml"))


@pytest.mark.parametrize("ci", GATEWAY_API_CI, ids=lambda p: p.name)
def test_every_httproute_rule_has_long_timeouts_and_no_retry(ci):
    routes = find(render(GATEWAY_API, files=[MODELS, ci]), "HTTPRoute")
    assert routes
    for route in routes:
        for rule in route["spec"]["rules"]:
            assert "retry" not in rule
            if rule.get("backendRefs"):
                assert _seconds(rule["timeouts"]["request"]) >= 3600
                assert _seconds(rule["timeouts"]["backendRequest"]) <= _seconds(rule["timeouts"]["request"])


def test_gateway_api_defaults_send_the_api_to_the_gateway_and_the_rest_to_the_ui():
    manifests = render(GATEWAY_API, {"gateway": {"className": "example"}}, files=[MODELS])
    assert get(manifests, "Gateway", "test")["spec"]["gatewayClassName"] == "example"
    route = get(manifests, "HTTPRoute", "test")
    assert route["spec"]["parentRefs"] == [{"name": "test"}]
    api, ui = route["spec"]["rules"]
    # Every path the gateway routes (tests/unit/test_endpoints.py checks against nginx.conf).
    assert [m["path"] for m in api["matches"]] == [
        {"type": "PathPrefix", "value": p}
        for p in ("/v1", "/v2/rerank", "/tokenize", "/detokenize", "/pooling", "/classify", "/score", "/rerank")
    ]
    assert api["backendRefs"] == [{"name": "api-gateway", "port": 80}]
    assert api["timeouts"] == {"request": "3600s", "backendRequest": "3600s"}
    assert ui["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert ui["backendRefs"] == [{"name": "openwebui", "port": 80}]
    assert not find(manifests, "ReferenceGrant")


def test_gateway_api_tls_redirect_and_cross_namespace_grants():
    manifests = render(GATEWAY_API, files=[MODELS, GATEWAY_API / "ci" / "full-values.yaml"])
    route = get(manifests, "HTTPRoute", "test")
    assert route["spec"]["parentRefs"] == [{"name": "test", "sectionName": "https"}]
    redirect = get(manifests, "HTTPRoute", "test-https-redirect")
    assert redirect["spec"]["parentRefs"] == [{"name": "test", "sectionName": "http"}]
    assert redirect["spec"]["rules"][0]["filters"][0]["requestRedirect"]["scheme"] == "https"
    grants = {g["metadata"]["namespace"]: g for g in find(manifests, "ReferenceGrant")}
    assert set(grants) == {"llm-gateway", "llm-ui"}
    assert grants["llm-ui"]["spec"]["from"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "llm"}
    ]


# --- Custom resources are checked against the real CRDs, never skipped -----------------------------


CUSTOM_KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("argoproj.io/v1alpha1", "AppProject"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


def test_every_custom_kind_rendered_here_has_its_crd_schema():
    rendered = set()
    for ci in OWN_CI:
        rendered |= {(m["apiVersion"], m["kind"]) for m in render(_chart(ci), files=[ci])}
    apps = applications(stack(ARGOCD / "ci" / "full-values.yaml"))
    for app in apps.values():
        rendered |= {(m["apiVersion"], m["kind"]) for m in render_application(app)}
    groups = {api.split("/")[0] for api, _ in CUSTOM_KINDS}
    custom = {k for k in rendered if k[0].split("/")[0] in groups}
    assert CUSTOM_KINDS <= custom, sorted(CUSTOM_KINDS - custom)
    assert custom <= set(crd_schemas()), sorted(custom - set(crd_schemas()))


def test_a_missing_crd_folder_fails_with_a_clear_message(monkeypatch, tmp_path):
    app = applications(stack())["vllm-models"]
    monkeypatch.setenv("LLM_CHARTS_CRDS_DIR", str(tmp_path / "nowhere"))
    crd_schemas.cache_clear()
    try:
        with pytest.raises(ManifestError, match="LLM_CHARTS_CRDS_DIR"):
            validate_manifest(app, NEWEST)
    finally:
        monkeypatch.undo()
        crd_schemas.cache_clear()

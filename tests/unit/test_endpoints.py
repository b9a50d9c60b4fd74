"""One list of the gateway's routed endpoints (model-catalog.gatewayEndpoints): nginx.conf's routed
location, the gateway's own 404 message (gateway.json `endpoints`) and the paths istio/ and
gateway-api/ send to the gateway all come from it. These tests fail when any of them disagrees, or
when the gateway routes an endpoint that an exposure chart would send to Open WebUI instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from harness.render import find, get, render_chart

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models.yaml"
# What must reach the gateway besides the POST endpoints: the model list and one model.
MODEL_PATHS = ["/v1/models", "/v1/models/qwen2-5-0-5b-instruct"]


def gateway_config() -> dict:
    cm = get(render_chart("api-gateway", values_files=[MODELS]), "ConfigMap", "test-api-gateway")["data"]
    return {"nginx.conf": cm["nginx.conf"], "gateway.json": json.loads(cm["gateway.json"])}


def location_endpoints(conf: str) -> list[str]:
    """The paths of nginx.conf's routed location, from its regex ^(?:/a|/b|...)\\z."""
    m = re.search(r"^\s*location ~ \^\(\?:([^)]*)\)\\z \{", conf, re.M)
    assert m, "no routed location of the form ^(?:...)\\z in nginx.conf"
    return [re.sub(r"\\(.)", r"\1", alt) for alt in m.group(1).split("|")]


@pytest.fixture(scope="module")
def routed() -> list[str]:
    cfg = gateway_config()
    from_nginx = location_endpoints(cfg["nginx.conf"])
    assert from_nginx == cfg["gateway.json"]["endpoints"], "nginx.conf and the gateway's 404 message disagree"
    assert "/v1/chat/completions" in from_nginx and "/rerank" in from_nginx, from_nginx
    return from_nginx


def istio_match(rules: list[dict], path: str) -> bool:
    for rule in rules:
        uri = rule["uri"]
        if uri.get("exact") == path or ("prefix" in uri and path.startswith(uri["prefix"])):
            return True
    return False


def test_istio_sends_every_routed_endpoint_to_the_gateway(routed):
    manifests = render_chart(REPO / "istio", values_files=[MODELS])
    vs = [v for v in find(manifests, "VirtualService") if any(r.get("name") == "api" for r in v["spec"]["http"])]
    assert len(vs) == 1, [v["metadata"]["name"] for v in find(manifests, "VirtualService")]
    api = next(r for r in vs[0]["spec"]["http"] if r["name"] == "api")
    missing = [p for p in routed + MODEL_PATHS if not istio_match(api["match"], p)]
    assert not missing, f"istio/ would send these gateway endpoints to Open WebUI: {missing}"
    assert api["route"][0]["destination"]["host"].startswith("api-gateway.")


def test_gateway_api_sends_every_routed_endpoint_to_the_gateway(routed):
    manifests = render_chart(REPO / "gateway-api", {"gateway": {"className": "traefik"}}, values_files=[MODELS])
    route = get(manifests, "HTTPRoute", "test")
    api = next(r for r in route["spec"]["rules"] if r["name"] == "api")
    prefixes = [m["path"]["value"] for m in api["matches"] if m["path"]["type"] == "PathPrefix"]

    def covered(path: str) -> bool:  # Gateway API PathPrefix matches whole path elements
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)

    missing = [p for p in routed + MODEL_PATHS if not covered(p)]
    assert not missing, f"gateway-api/ would send these gateway endpoints to Open WebUI: {missing}"
    assert api["backendRefs"][0]["name"] == "api-gateway"


@pytest.mark.parametrize("chart", ["istio", "gateway-api"])
def test_extra_paths_are_added_and_the_old_key_still_works(chart, routed):
    values = {"routes": {"extraApiPaths": ["/version"], "apiPaths": ["/legacy"]}}
    if chart == "gateway-api":
        values["gateway"] = {"className": "traefik"}
    text = yaml.safe_dump_all(render_chart(REPO / chart, values, values_files=[MODELS]))
    assert "/version" in text and "/legacy" in text and "/rerank" in text

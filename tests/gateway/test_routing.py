"""Routing on the body's `model`: every endpoint, aliases, the default model, request errors, big bodies."""

from __future__ import annotations

import json

import pytest
import requests

from . import rawhttp
from .api import describe, error, get, post, routed_to

ROUTED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/tokenize", "/detokenize"]
BODY = {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi", "tokens": [104, 105]}


@pytest.mark.parametrize("path", ROUTED)
@pytest.mark.parametrize("model", ["alpha", "beta"])
def test_every_endpoint_routes_by_body_model(gateway, backends, path, model):
    resp = post(gateway, path, dict(BODY, model=model))
    routed_to(resp, backends[model], gateway)
    assert resp.headers.get("X-Gateway-Model") == model, describe(resp, gateway)


@pytest.mark.parametrize("alias,model", [("org/Alpha-7B", "alpha"), ("alpha-latest", "alpha"), ("beta-small", "beta")])
def test_aliases_route_to_their_model(gateway, backends, alias, model):
    resp = post(gateway, "/v1/chat/completions", dict(BODY, model=alias))
    routed_to(resp, backends[model], gateway)
    assert resp.headers.get("X-Gateway-Model") == model, describe(resp, gateway)


def test_routing_header_from_the_client_does_not_override_the_body(gateway, backends):
    resp = post(
        gateway,
        "/v1/chat/completions",
        dict(BODY, model="beta"),
        headers={"X-Gateway-Model": "alpha", "X-Model": "alpha"},
    )
    routed_to(resp, backends["beta"], gateway)


def test_request_reaches_the_backend_intact(gateway, backends):
    body = dict(BODY, model="alpha", mock={"echo_headers": True}, temperature=0.25)
    resp = post(gateway, "/v1/chat/completions", body, headers={"X-Request-Id": "rid-1"})
    routed_to(resp, backends["alpha"], gateway)
    echo = resp.json()["mock_echo"]
    assert echo["body_bytes"] == len(json.dumps(body)), echo
    assert echo["http_version"] == "HTTP/1.1", echo
    assert echo["headers"].get("x-request-id") == "rid-1", echo
    assert echo["path"] == "/v1/chat/completions", echo


class TestDefaultModel:
    def test_first_enabled_model_when_absent(self, gateway, backends):
        resp = post(gateway, "/v1/chat/completions", {"messages": BODY["messages"]})
        routed_to(resp, backends["alpha"], gateway)
        assert resp.headers.get("X-Gateway-Model") == "alpha", describe(resp, gateway)

    def test_configured_default(self, gateway_factory, backends):
        gw = gateway_factory({"routing": {"defaultModel": "beta-small"}}, name="default-beta")
        resp = post(gw, "/v1/completions", {"prompt": "hi"})
        routed_to(resp, backends["beta"], gw)
        assert resp.headers.get("X-Gateway-Model") == "beta", describe(resp, gw)
        routed_to(post(gw, "/v1/completions", {"prompt": "hi", "model": "alpha"}), backends["alpha"], gw)

    def test_none_means_missing_model_is_400(self, gateway_factory, backends):
        gw = gateway_factory({"routing": {"defaultModel": "none"}}, name="default-none")
        err = error(post(gw, "/v1/chat/completions", {"messages": BODY["messages"]}), 400, gw)
        assert "model" in err["message"]
        routed_to(post(gw, "/v1/chat/completions", dict(BODY, model="beta")), backends["beta"], gw)


class TestRequestErrors:
    @pytest.mark.parametrize("model", ["nope", "omega", "ALPHA"])
    def test_unknown_or_disabled_model_is_404(self, gateway, model):
        err = error(
            post(gateway, "/v1/chat/completions", dict(BODY, model=model)), 404, gateway, code="model_not_found"
        )
        assert "/v1/models" in err["message"], err

    @pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"alpha"', b""])
    def test_invalid_json_is_400(self, gateway, data):
        resp = post(gateway, "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
        error(resp, 400, gateway)

    def test_model_not_a_string_is_400(self, gateway):
        error(post(gateway, "/v1/chat/completions", dict(BODY, model=["alpha"])), 400, gateway)

    @pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded"])
    def test_wrong_content_type_is_400(self, gateway, ctype):
        headers = {"Content-Type": ctype} if ctype else {}
        raw = json.dumps(dict(BODY, model="alpha")).encode()
        resp = rawhttp.request(
            "127.0.0.1",
            gateway.port,
            "POST",
            "/v1/chat/completions",
            raw=(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
                + b"Content-Length: %d\r\n\r\n" % len(raw)
                + raw
            ),
        )
        assert resp.status == 400, (resp.status, resp.body, gateway.context())
        assert "x-mock-backend" not in resp.headers, "the gateway forwarded it; the backend refused it"
        assert "error" in resp.json(), resp.body

    def test_content_type_with_charset_is_fine(self, gateway, backends):
        resp = post(
            gateway,
            "/v1/chat/completions",
            data=json.dumps(dict(BODY, model="alpha")),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        routed_to(resp, backends["alpha"], gateway)


class TestBodies:
    def test_5mb_body_spilled_to_a_temp_file_routes_correctly(self, gateway, backends):
        # The model comes last: a router that only sees an in-memory prefix cannot find it.
        body = {
            "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}],
            "mock": {"echo_headers": True},
            "model": "beta",
        }
        data = json.dumps(body).encode()
        resp = post(
            gateway, "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}, timeout=30
        )
        routed_to(resp, backends["beta"], gateway)
        assert resp.json()["mock_echo"]["body_bytes"] == len(data)
        # nginx says so at warn level (the chart's default): the body really went through a temp file.
        assert "client request body is buffered to a temporary file" in gateway.error_log(tail=400), (
            f"the 5 MB body was not spilled to a temp file, so this test proved less than it says{gateway.context()}"
        )

    def test_over_the_limit_is_413_json(self, gateway):
        data = b'{"model": "alpha", "prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}'
        try:
            resp = post(gateway, "/v1/completions", data=data, headers={"Content-Type": "application/json"}, timeout=30)
        except requests.ConnectionError as exc:  # nginx may answer before reading it all, then reset
            pytest.fail(f"connection failed instead of a 413 answer: {exc}{gateway.context()}")
        error(resp, 413, gateway)

    def test_over_the_limit_announced_by_content_length_is_413_without_sending_it(self, gateway):
        resp = rawhttp.request(
            "127.0.0.1",
            gateway.port,
            "POST",
            "/v1/completions",
            raw=(
                b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{"
            ),
        )
        assert resp.status == 413, (resp.status, resp.body, gateway.context())
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        assert "error" in resp.json()


class TestModels:
    def test_models_list_in_openai_format(self, gateway):
        resp = get(gateway, "/v1/models")
        assert resp.status_code == 200, describe(resp, gateway)
        body = resp.json()
        assert body["object"] == "list", body
        ids = [m["id"] for m in body["data"]]
        assert {"alpha", "beta", "gamma", "delta"} <= set(ids), ids
        assert "omega" not in ids, ids
        for m in body["data"]:
            assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"], m

    def test_models_list_shows_aliases(self, gateway):
        body = get(gateway, "/v1/models").json()
        text = json.dumps(body)
        for alias in ("org/Alpha-7B", "alpha-latest", "beta-small"):
            assert alias in text, body

    def test_health_endpoints(self, gateway):
        for path in ("/healthz", "/readyz"):
            resp = get(gateway, path)
            assert resp.status_code == 200, describe(resp, gateway)

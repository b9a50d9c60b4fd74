"""Small HTTP helpers for the gateway tests; every failure message carries the nginx error log."""

from __future__ import annotations

import requests

from .runner import Gateway


def post(
    gw: Gateway, path: str, body=None, *, headers: dict | None = None, data=None, timeout: float = 15.0
) -> requests.Response:
    if data is None:
        return requests.post(gw.url + path, json=body, headers=headers, timeout=timeout)
    return requests.post(gw.url + path, data=data, headers=headers, timeout=timeout)


def get(gw: Gateway, path: str, *, headers: dict | None = None, timeout: float = 15.0) -> requests.Response:
    return requests.get(gw.url + path, headers=headers, timeout=timeout)


def describe(resp: requests.Response, gw: Gateway) -> str:
    return (
        f"{resp.request.method} {resp.request.path_url} -> {resp.status_code} "
        f"{dict(resp.headers)}\n{resp.text[:2000]}{gw.context()}"
    )


def routed_to(resp: requests.Response, backend, gw: Gateway) -> None:
    """The answer came from this mock backend (X-Mock-Backend and system_fingerprint agree)."""
    assert resp.status_code == 200, describe(resp, gw)
    assert resp.headers.get("X-Mock-Backend") == backend.backend_id, describe(resp, gw)
    assert resp.json().get("system_fingerprint") == backend.backend_id, describe(resp, gw)


def error(resp: requests.Response, status: int, gw: Gateway, code: str | None = None) -> dict:
    """An OpenAI error envelope with this status (and code) made by the gateway itself, not a backend."""
    assert resp.status_code == status, describe(resp, gw)
    assert "X-Mock-Backend" not in resp.headers, f"a backend answered, not the gateway: {describe(resp, gw)}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), describe(resp, gw)
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {describe(resp, gw)}") from None
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict), describe(resp, gw)
    assert {"message", "type", "param", "code"} <= set(err), describe(resp, gw)
    assert isinstance(err["message"], str) and err["message"], describe(resp, gw)
    if code is not None:
        assert err["code"] == code, describe(resp, gw)
    return err

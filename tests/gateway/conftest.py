"""Fixtures: mock backends, and the api-gateway chart rendered and running on real nginx.

Session-scoped: one set of mock backends and one main gateway serve most tests; gateways
with other values (auth, default model) start once each through `gateway_factory`.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from harness.render import HelmError
from harness.tools import ToolError

from . import runner
from .backends import MockBackend, closed_port

API_KEYS_SECRET = "gateway-test-api-keys"
READ_TIMEOUT_SECONDS = 2  # the "backend hangs" test waits this long for its 504


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    try:
        return runner.ensure_nginx()
    except ToolError as exc:  # fail, never skip: the session exists to run these
        pytest.fail(f"cannot run the gateway tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def backends(tmp_path_factory):
    """name -> MockBackend; `gamma` is down (no process), `delta` keeps loading."""
    logs = tmp_path_factory.mktemp("mocks")
    started = {
        "alpha": MockBackend(
            "--model", "org/Alpha-7B", "--served-model-name", "alpha", "org/Alpha-7B", "alpha-latest", log_dir=logs
        ),
        "beta": MockBackend(
            "--model",
            "/mnt/models/beta.Q4_K_M.gguf",
            "--alias",
            "beta",
            "--alias",
            "beta-small",
            "--ctx-size",
            "2048",
            log_dir=logs,
        ),
        "delta": MockBackend(
            "--model", "org/Delta", "--served-model-name", "delta", "--mock-startup-seconds", "3600", log_dir=logs
        ),
    }
    try:
        for b in started.values():
            b.start()
        yield started
    finally:
        for b in started.values():
            b.stop()


@pytest.fixture(scope="session")
def endpoints(backends) -> dict[str, str]:
    return {
        "alpha": backends["alpha"].address,
        "beta": backends["beta"].address,
        "gamma": f"127.0.0.1:{closed_port()}",
        "delta": backends["delta"].address,
    }


@pytest.fixture(scope="session")
def base_values(endpoints) -> dict:
    return {
        "routing": {"endpoints": endpoints},
        "timeouts": {"readSeconds": READ_TIMEOUT_SECONDS, "connectSeconds": 1},
        "healthCheck": {"intervalSeconds": 1},
        "body": {"maxSize": "8m"},
    }


@pytest.fixture(scope="session")
def gateway_factory(nginx_bin, base_values):
    """start(values_overrides, secrets=None, name=...) -> a running Gateway, one per distinct overrides."""
    running: dict[str, runner.Gateway] = {}

    def start(
        overrides: dict | None = None, *, secrets: dict | None = None, name: str = "gw", headers: dict | None = None
    ):
        key = json.dumps([overrides, secrets], sort_keys=True)
        if key not in running:
            try:
                gw = runner.start(runner.deep_merge(base_values, overrides or {}), secrets=secrets, name=name)
            except runner.GatewayError as exc:
                pytest.fail(str(exc), pytrace=False)
            except HelmError as exc:
                pytest.fail(f"rendering charts/api-gateway for the gateway tests failed:\n{exc.stderr}", pytrace=False)
            running[key] = gw
            wait_for_health_checks(gw, headers or {})
        return running[key]

    yield start
    for gw in running.values():
        runner.cleanup(gw)


def wait_for_health_checks(gw: runner.Gateway, headers: dict, timeout: float = 8.0) -> None:
    """Until /v1/models says alpha is ready and delta is not (the background checks have run)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            resp = requests.get(gw.url + "/v1/models", timeout=2, headers=headers)
            last = f"{resp.status_code} {resp.text}"
            entries = {m["id"]: m for m in resp.json().get("data", [])}
            if ready_of(entries.get("alpha", {})) is True and ready_of(entries.get("delta", {})) is False:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(
        f"/v1/models never showed alpha ready and delta not ready; last answer: {last}{gw.context()}", pytrace=False
    )


def ready_of(entry: dict):
    """A /v1/models entry's readiness as True/False (None: the entry says nothing)."""
    for key in ("ready", "is_ready"):
        if isinstance(entry.get(key), bool):
            return entry[key]
    status = entry.get("status") or entry.get("state") or (entry.get("readiness") or {})
    if isinstance(status, dict):
        status = status.get("status") or status.get("state") or status.get("ready")
    if isinstance(status, bool):
        return status
    if isinstance(status, str):
        return status.lower() in ("ready", "available", "ok", "healthy", "up")
    return None


@pytest.fixture(scope="session")
def gateway(gateway_factory):
    """The main gateway: no auth, default model = the first enabled one (alpha)."""
    return gateway_factory(name="main")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the error log of every gateway it used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call" and "--- nginx error log" not in str(report.longrepr):
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, runner.Gateway):
                report.sections.append((f"nginx error log ({name}, tail)", value.error_log()))

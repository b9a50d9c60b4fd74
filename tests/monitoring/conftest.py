"""Fixtures: the monitoring objects rendered, the lazily built Prometheus tools, and a real
llama-server behind the api-gateway on real nginx, both scraped.

Nothing here skips: a missing tool or package fails with the message that says how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from harness import paths, promql, tools
from harness.render import HelmError, render_chart

MONITORING_VALUES = paths.CHARTS / "api-gateway" / "ci" / "monitoring-values.yaml"
ON = {"metrics": {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def _tool(name: str) -> Path:
    try:
        return tools.tool(name)
    except tools.ToolError as exc:  # fail, never skip: the session exists to run these
        pytest.fail(f"cannot build {name}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _tool("promtool")


@pytest.fixture(scope="session")
def promql_check() -> Path:
    return _tool("promql-check")


@pytest.fixture(scope="session", params=["defaults", "ci/monitoring-values.yaml"])
def rendered(request) -> list[dict]:
    """The chart with both objects on: its defaults, and the ci file that sets every threshold."""
    if request.param == "defaults":
        return render_chart("api-gateway", ON)
    return render_chart("api-gateway", values_files=[MONITORING_VALUES])


@pytest.fixture(scope="session")
def queries(rendered, promql_check) -> dict[str, str]:
    _, dashboard = promql.dashboard_of(rendered)
    return {**promql.dashboard_queries(dashboard), **promql.rule_queries(promql.rule_of(rendered))}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real llama-server (tools/llamacpp.py) with --metrics on a tiny random-weight GGUF."""
    sys.path.insert(0, str(paths.REPO / "tools"))
    import llamacpp
    import tinymodels

    from gateway.backends import free_port, wait_http

    work = tmp_path_factory.mktemp("llama")
    try:
        prefix = llamacpp.ensure_llama_server()
    except Exception as exc:  # debpkgs.DebianError: says what is missing
        pytest.fail(f"cannot run llama-server: {exc}", pytrace=False)
    gguf = tinymodels.write_gguf(work / "tiny.gguf")
    port = free_port()
    log = (work / "llama-server.log").open("ab")
    argv = [*prefix, "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--alias", "beta"]
    proc = subprocess.Popen([*argv, "-t", "1", "--metrics"], stdout=log, stderr=log)
    try:
        status = wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
        if status != 200:
            pytest.fail(f"llama-server did not start ({status}):\n{(work / 'llama-server.log').read_text()[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def gateway(llama_server):
    """The chart's nginx (tests/gateway/runner.py) routing model beta to the llama-server; the
    other models of the gateway tests' catalog point at a closed port (down)."""
    from gateway import runner
    from gateway.backends import closed_port

    down = f"127.0.0.1:{closed_port()}"
    values = {
        "routing": {"endpoints": {"alpha": down, "gamma": down, "delta": down, "beta": llama_server}},
        "healthCheck": {"intervalSeconds": 1},
    }
    try:
        gw = runner.start(values, name="monitoring")
    except (runner.GatewayError, HelmError) as exc:
        pytest.fail(f"the gateway did not start: {exc}", pytrace=False)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # until the health checks found beta's pod
            models = requests.get(gw.url + "/v1/models", timeout=5).json().get("data", [])
            if any(m["id"] == "beta" and (m.get("replicas") or {}).get("ready") for m in models):
                break
            time.sleep(0.3)
        yield gw
    finally:
        runner.cleanup(gw)


@pytest.fixture(scope="session")
def scratch():
    root = Path(tempfile.mkdtemp(prefix="monitoring-"))
    yield root
    if not os.environ.get("GATEWAY_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)

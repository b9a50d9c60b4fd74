"""One session-scoped cluster and one installed stack for the whole e2e run.

Options (also as environment variables, for nox): --kube-context / LLM_CHARTS_KUBE_CONTEXT,
--e2e-kubeconfig / LLM_CHARTS_KUBECONFIG, --provider / LLM_CHARTS_PROVIDER,
--keep-cluster / LLM_CHARTS_KEEP_CLUSTER=1 (keep what this run created, stack included),
--delete-cluster (delete the cluster at the end even when it was already running).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e import progress, providers
from e2e.stack import Stack

NAMESPACE = os.environ.get("LLM_CHARTS_E2E_NAMESPACE", "llm-e2e")


def pytest_addoption(parser):
    group = parser.getgroup("e2e", "end-to-end cluster")
    group.addoption("--kube-context", default=None, help="use this context of an existing cluster")
    group.addoption("--e2e-kubeconfig", default=None, help="kubeconfig of an existing cluster")
    group.addoption("--provider", default=None, choices=("existing", "kind", "local"))
    group.addoption("--keep-cluster", action="store_true", help="leave the cluster and the stack running")
    group.addoption("--delete-cluster", action="store_true", help="delete the cluster at the end")


def pytest_configure(config):
    def write(line: str) -> None:
        # Progress is for the person waiting: shown at once, not captured with the test output.
        capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if capman is None or reporter is None:
            print(line, flush=True)
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)
    progress.writer = write


def _keep(config) -> bool:
    return config.getoption("--keep-cluster") or os.environ.get("LLM_CHARTS_KEEP_CLUSTER") == "1"


@pytest.fixture(scope="session")
def cluster(request):
    c = providers.select(request.config.getoption("--e2e-kubeconfig"),
                         request.config.getoption("--kube-context"), request.config.getoption("--provider"))
    providers.up(c)
    yield c
    if request.config.getoption("--delete-cluster") or (c.created and not _keep(request.config)):
        c.delete()
    else:
        progress.say(f"cluster left running: {c.describe()}")


@pytest.fixture(scope="session")
def stack(cluster, request):
    s = Stack(cluster, NAMESPACE, Path(__file__).resolve().parents[2] / "build" / "e2e")
    s.prepare()
    try:
        s.install_all()
    except Exception:
        progress.say("install failed; the namespace:\n" + s.diagnostics())
        raise
    yield s
    if not _keep(request.config):
        with progress.step(f"remove the stack (namespace {NAMESPACE})"):
            s.uninstall_all()
            for ns in (NAMESPACE, *sorted(s.extra_namespaces)):
                cluster.kubectl("delete", "namespace", ns, "--wait=true", check=False, timeout=300)


@pytest.fixture
def gateway(stack):
    """Base URL of the api-gateway Service, reached from this host (re-opened per test: a
    port-forward ends when the gateway pod it picked rolls)."""
    with stack.gateway() as url:
        yield url

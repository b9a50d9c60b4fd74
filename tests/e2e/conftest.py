"""One session-scoped cluster and one installed stack (real engines) for the whole e2e run.

Options (also as environment variables, for nox): --kube-context / LLM_CHARTS_KUBE_CONTEXT,
--e2e-kubeconfig / LLM_CHARTS_KUBECONFIG, --provider / LLM_CHARTS_PROVIDER,
--keep-cluster / LLM_CHARTS_KEEP_CLUSTER=1 (keep what this run created, stack included),
--delete-cluster (delete the cluster at the end even when it was already running).

The tooling lives in tools/ (tools/localcluster, tools/stack); the images start building at
the start of the session, while the cluster's binaries build, so a cold run overlaps them.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import progress  # noqa: E402
from stack import install, keda, providers  # noqa: E402

NAMESPACE = os.environ.get("LLM_CHARTS_E2E_NAMESPACE", "llm-e2e")
WORKDIR = REPO / "build" / "e2e"


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


def _deletes_cluster(config, cluster: providers.Cluster) -> bool:
    """The session ends by deleting the cluster (one this run created, or --delete-cluster)."""
    return config.getoption("--delete-cluster") or (cluster.created and not _keep(config))


@pytest.fixture(scope="session")
def selected_cluster(request) -> providers.Cluster:
    return providers.select(
        request.config.getoption("--e2e-kubeconfig"),
        request.config.getoption("--kube-context"),
        request.config.getoption("--provider"),
    )


@pytest.fixture(scope="session")
def warm_up(selected_cluster, request):
    """Start the slow, independent work at once (images, the local cluster's binaries); fixtures
    wait on what they need."""
    built, artifacts = install.start_builds(selected_cluster)
    # KEDA compiles beside the cluster's binaries and the images, when test_autoscaling.py runs
    # (a cold build takes long: a session without it must not wait for one at exit).
    keda_build = None
    if any("test_autoscaling.py::" in item.nodeid for item in request.session.items):
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        keda_build = pool.submit(keda.build)
        pool.shutdown(wait=False)
    return {"images": built, "artifacts": artifacts, "keda": keda_build}


@pytest.fixture(scope="session")
def images(warm_up) -> dict[str, str]:
    """name -> reference of every image the stack needs (built once per input hash)."""
    return warm_up["images"].result()


@pytest.fixture(scope="session")
def cluster(request, selected_cluster, warm_up):
    if warm_up["artifacts"] is not None:
        warm_up["artifacts"].result()
    c = providers.up(selected_cluster)
    yield c
    if _deletes_cluster(request.config, c):
        c.delete()
    else:
        progress.say(f"cluster left running: {c.describe()}")


@pytest.fixture(scope="session")
def stack(cluster, warm_up, request):
    s = install.Stack(cluster, NAMESPACE, WORKDIR)
    # A clean namespace: caches kept by an earlier run (helm.sh/resource-policy: keep) would make
    # the first start of a model not a first start.
    with progress.step(f"remove what an earlier run left in namespace {NAMESPACE}"):
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    try:
        s.prepare(warm_up["images"])
        s.install_all()
    except Exception:
        progress.say("install failed; the namespace:\n" + s.diagnostics())
        raise
    yield s
    # A cluster deleted next goes with everything in it (its pods' containers too): removing the
    # namespace first would only wait for every pod's graceful stop (5 minutes, measured).
    if not _keep(request.config) and not _deletes_cluster(request.config, cluster):
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

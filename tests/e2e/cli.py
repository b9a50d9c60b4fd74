#!/usr/bin/env python3
"""The e2e cluster and the stack by hand (what `nox -s demo` and `nox -s down` run).

    python3 tests/e2e/cli.py up          start (or reuse) the cluster
    python3 tests/e2e/cli.py demo        cluster + stack in namespace llm-demo, one chat per model, left running
    python3 tests/e2e/cli.py down        remove the demo stack and delete the cluster this tooling created
    python3 tests/e2e/cli.py down --keep-cluster    remove the demo stack only
    python3 tests/e2e/cli.py status
Provider choice as in the tests: LLM_CHARTS_KUBECONFIG / LLM_CHARTS_KUBE_CONTEXT, kind, local.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import localcluster, progress, providers  # noqa: E402
from e2e.stack import Stack, e2e_models  # noqa: E402

NAMESPACE = os.environ.get("LLM_CHARTS_DEMO_NAMESPACE", "llm-demo")
REPO = Path(__file__).resolve().parents[2]


def demo(cluster: providers.Cluster) -> int:
    import requests

    stack = Stack(cluster, NAMESPACE, REPO / "build" / "demo")
    stack.prepare()
    stack.install_all()
    with stack.gateway() as url:
        print(f"\nThe api-gateway of namespace {NAMESPACE}: {url}  (Service api-gateway.{NAMESPACE}.svc:80)")
        if cluster.provider != "local":
            print(f"  (a port-forward for this run; yours: kubectl -n {NAMESPACE} port-forward svc/api-gateway 8080:80)")
        print(f"  export KUBECONFIG={cluster.kubeconfig}" if cluster.kubeconfig else "")
        print(f"  curl -s {url}/v1/models\n")
        for model in e2e_models()["models"]:
            if model.get("enabled") is False:
                continue
            name = model["modelName"]
            resp = requests.post(f"{url}/v1/chat/completions", timeout=30, json={
                "model": name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8})
            backend = resp.headers.get("X-Mock-Backend", "?")
            text = ""
            if resp.ok:
                text = resp.json()["choices"][0]["message"]["content"][:60]
            print(f"  {name:28} HTTP {resp.status_code}  answered by {backend}  {text!r}")
    print("\nLeft running. Remove with: nox -s down")
    return 0


def down(cluster: providers.Cluster, keep_cluster: bool) -> int:
    if cluster.provider == "local" and not localcluster.running():
        progress.say("the local cluster is not running; removing what is left of it")
        if not keep_cluster:
            cluster.delete()
        return 0
    stack = Stack(cluster, NAMESPACE, REPO / "build" / "demo")
    with progress.step(f"remove the demo stack (namespace {NAMESPACE})"):
        stack.uninstall_all()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                        check=False, timeout=300)
    if not keep_cluster:
        cluster.delete()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "demo", "down", "status"))
    parser.add_argument("--kube-context")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--provider", choices=("existing", "kind", "local"))
    parser.add_argument("--keep-cluster", action="store_true", help="down: remove the stack only")
    args = parser.parse_args(argv)
    cluster = providers.select(args.kubeconfig, args.kube_context, args.provider)
    if args.command == "status":
        print(localcluster.status() if cluster.provider == "local" else cluster.describe())
        return 0
    if args.command == "down":
        return down(cluster, args.keep_cluster)
    providers.up(cluster)
    if args.command == "up":
        print(f"kubeconfig: {cluster.kubeconfig}")
        return 0
    return demo(cluster)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

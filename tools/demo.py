#!/usr/bin/env python3
"""The stack by hand (what `nox -s demo` and `nox -s down` run).

    python3 tools/demo.py up          start (or reuse) the cluster
    python3 tools/demo.py demo        cluster + stack in namespace llm-demo, one chat per model, left running
    python3 tools/demo.py demo --vllm ... with the vLLM models too (real vLLM on CPU: a 6 GB image, 4 GB a model)
    python3 tools/demo.py down        remove the demo stack and delete the cluster this tooling created
    python3 tools/demo.py down --keep-cluster    remove the demo stack only
    python3 tools/demo.py status
Provider choice as in the tests: LLM_CHARTS_KUBECONFIG / LLM_CHARTS_KUBE_CONTEXT, kind, local.
The stack: real llama-server (and vLLM) on tiny stand-in models, the api-gateway, Open WebUI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import localcluster
import progress
from stack import install, models, providers

NAMESPACE = os.environ.get("LLM_CHARTS_DEMO_NAMESPACE", "llm-demo")
REPO = Path(__file__).resolve().parents[1]


def demo(cluster: providers.Cluster, vllm: bool) -> int:
    import requests

    built, artifacts = install.start_builds(cluster, vllm=vllm)
    if artifacts is not None:
        artifacts.result()
    providers.up(cluster)
    stack = install.Stack(cluster, NAMESPACE, REPO / "build" / "demo", vllm=vllm)
    stack.prepare(built)
    stack.install_all()
    kubeconfig = f"export KUBECONFIG={cluster.kubeconfig}\n  " if cluster.kubeconfig else ""
    with stack.gateway() as url:
        print(f"\nThe api-gateway of namespace {NAMESPACE}: {url}  (Service api-gateway.{NAMESPACE}.svc:80)")
        print(f"  curl -s {url}/v1/models")
        for model in models.enabled(stack.catalog()):
            name = model["modelName"]
            resp = requests.post(
                f"{url}/v1/chat/completions",
                timeout=60,
                json={"model": name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8},
            )
            text = resp.json()["choices"][0]["message"]["content"][:40] if resp.ok else resp.text[:80]
            print(f"  {name:28} HTTP {resp.status_code}  {text!r}")
        print("  (tiny random-weight stand-in models: the answers are random bytes)")
    with stack.openwebui_url() as ui:
        print(
            f"\nOpen WebUI: {ui}"
            + (
                "  (this host reaches the Service's ClusterIP)"
                if cluster.provider == "local"
                else "  (a port-forward for this run only)"
            )
        )
        print(
            f"  from elsewhere: {kubeconfig}kubectl -n {NAMESPACE} port-forward svc/openwebui 8080:80"
            "  then open http://127.0.0.1:8080"
        )
    print("\nLeft running. Remove with: nox -s down")
    return 0


def down(cluster: providers.Cluster, keep_cluster: bool) -> int:
    if cluster.provider == "local" and not localcluster.running():
        progress.say("the local cluster is not running; removing what is left of it")
        if not keep_cluster:
            cluster.delete()
        return 0
    stack = install.Stack(cluster, NAMESPACE, REPO / "build" / "demo")
    with progress.step(f"remove the demo stack (namespace {NAMESPACE})"):
        stack.uninstall_all()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", check=False, timeout=300)
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
    parser.add_argument("--vllm", action="store_true", help="demo: also serve the vLLM models (real vLLM on CPU)")
    args = parser.parse_args(argv)
    cluster = providers.select(args.kubeconfig, args.kube_context, args.provider)
    if args.command == "status":
        print(localcluster.status() if cluster.provider == "local" else cluster.describe())
        return 0
    if args.command == "down":
        return down(cluster, args.keep_cluster)
    if args.command == "up":
        providers.up(cluster)
        print(f"kubeconfig: {cluster.kubeconfig}")
        return 0
    return demo(cluster, args.vllm)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

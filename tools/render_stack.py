#!/usr/bin/env python3
"""Render the whole stack from models.yaml and print what would be deployed.

    python3 tools/render_stack.py [--values models.yaml] [--namespace llm] [--out build/stack]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import paths  # noqa: E402
from harness.render import HelmError, parse_manifests, render_text  # noqa: E402

# Install order of the golden path: models first, then the gateway, then the UI.
STACK = ("vllm-models", "ramalama-models", "api-gateway", "openwebui")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", default=str(REPO / "models.yaml"))
    parser.add_argument("--namespace", default="llm")
    parser.add_argument("--out", default=str(paths.BUILD / "stack"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"Stack rendered from {args.values} into namespace {args.namespace!r}:\n")
    for chart in STACK:
        try:
            text = render_text(chart, values_files=[args.values], release=chart, namespace=args.namespace)
        except HelmError as exc:
            print(f"{chart}: render failed\n{exc.stderr}", file=sys.stderr)
            return 1
        (out / f"{chart}.yaml").write_text(text)
        manifests = parse_manifests(text)
        kinds = Counter(m["kind"] for m in manifests)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing"
        print(f"  {chart:16} {summary}")
        for m in manifests:
            if m["kind"] in ("Deployment", "StatefulSet", "Service"):
                print(f"  {'':16}   {m['kind']}/{m['metadata']['name']}")
    print(f"\nManifests written to {out}/. Apply with: kubectl apply -n {args.namespace} -f {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

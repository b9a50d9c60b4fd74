"""The model charts' custom resources against the real API server: every ci/*-values.yaml of
vllm-models and ramalama-models (LeaderWorkerSet groups, InferencePools and their HTTPRoutes,
the accelerator presets, LoRA adapters) rendered and applied with `kubectl apply
--dry-run=server --validate=strict`, with the pinned CRDs installed (the `crds` fixture of
test_stack.py). The API server runs the CRDs' own rules the unit tests' JSON schemas cannot
(CEL `x-kubernetes-validations`, e.g. an endpoint picker Service needs a port; defaults; strict
unknown fields), and Kubernetes' own validation of the pod templates inside them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e.test_stack import crds  # noqa: F401  (the fixture: the pinned CRDs, installed and Established)

REPO = Path(__file__).resolve().parents[2]
MODEL_CHARTS = ("vllm-models", "ramalama-models")
# The kinds this file is about: each must be in at least one rendered case, or the test proves nothing.
CUSTOM_KINDS = {"LeaderWorkerSet", "InferencePool", "HTTPRoute"}
# The dry runs go to a namespace of their own: in the stack's, `apply` would patch the installed
# objects of the same names (a PVC "resized", a merged pod template) instead of checking the chart's.
DRY_RUN_SUFFIX = "-dry-run"


def _cases() -> list[tuple[str, str]]:
    return [
        (chart, values.name)
        for chart in MODEL_CHARTS
        for values in sorted((REPO / "charts" / chart / "ci").glob("*-values.yaml"))
    ]


def _render(stack, chart: str, values: str) -> str:
    # The ci file's `models` replace the stack's list (helm -f: a later file's list wins whole).
    return stack.template(
        REPO / "charts" / chart, REPO / "charts" / chart / "ci" / values, namespace=stack.namespace + DRY_RUN_SUFFIX
    )


def test_the_cases_render_every_custom_kind_of_the_model_charts(stack):
    kinds = {
        d["kind"]
        for chart, values in _cases()
        for d in yaml.safe_load_all(_render(stack, chart, values))
        if isinstance(d, dict) and d.get("kind")
    }
    assert CUSTOM_KINDS <= kinds, f"no ci file renders {sorted(CUSTOM_KINDS - kinds)}"


@pytest.mark.parametrize(("chart", "values"), _cases())
def test_model_chart_manifests_pass_server_side_validation(stack, crds, chart, values):  # noqa: F811
    manifest = _render(stack, chart, values)
    if not manifest.strip():
        # Only a values file without a model of this chart may render nothing (ramalama's minimal).
        entries = (yaml.safe_load((REPO / "charts" / chart / "ci" / values).read_text()) or {}).get("models") or []
        gguf = [m for m in entries if "gguf" in m and m.get("enabled", True)]
        mine = (
            gguf if chart == "ramalama-models" else [m for m in entries if "gguf" not in m and m.get("enabled", True)]
        )
        assert not mine, f"{chart} with {values} renders nothing for {[m['modelName'] for m in mine]}"
        return
    proc = stack.server_dry_run_apply(manifest, namespace=stack.namespace + DRY_RUN_SUFFIX)
    assert proc.returncode == 0, f"{chart} {values}:\n{proc.stderr}"


def test_the_api_server_enforces_the_inference_pool_rule_the_chart_checks_first(stack, crds):  # noqa: F811
    """The rule the chart's validation repeats at render time (an endpoint picker Service without
    a port) is the API server's own: the same object is refused by it, so the chart's message is
    not inventing a constraint."""
    pool = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": "e2e-pool-without-picker-port", "namespace": stack.namespace},
        "spec": {
            "selector": {"matchLabels": {"llm-stack/model": "x"}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "epp"},
        },
    }
    proc = stack.server_dry_run_apply(yaml.safe_dump(pool))
    assert proc.returncode != 0 and "port is required" in proc.stderr, proc.stderr

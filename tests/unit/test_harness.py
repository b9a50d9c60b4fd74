"""The harness's checks catch a deliberately broken chart (tests/fixtures/broken-chart)."""

from __future__ import annotations

import pytest

from harness import paths
from harness.render import HelmError, get, render_chart, render_text
from harness.validate import KUBE_VERSIONS, ManifestError, check_names, check_unrendered, validate_manifest

BROKEN = paths.TESTS / "fixtures" / "broken-chart"


@pytest.fixture(scope="module")
def manifests():
    return render_chart(BROKEN)


def test_render_failure_carries_helms_message():
    with pytest.raises(HelmError) as err:
        render_chart(BROKEN, {"fail": True})
    assert "broken-chart: .Values.fail is true; set fail=false" in err.value.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_unknown_field_in_a_builtin_kind_is_rejected(manifests, kube_version):
    with pytest.raises(ManifestError, match="replicaz"):
        validate_manifest(get(manifests, "Deployment", "broken"), kube_version)


def test_unknown_field_in_a_custom_resource_is_rejected(manifests):
    with pytest.raises(ManifestError, match="hostz"):
        validate_manifest(get(manifests, "VirtualService", "vs"), KUBE_VERSIONS[-1])


def test_long_names_are_reported(manifests):
    assert any("70 characters" in p for p in check_names(manifests))


def test_unrendered_template_text_is_reported():
    assert check_unrendered(render_text(BROKEN))


def test_prometheus_and_grafana_templates_are_not_leftovers():
    ok = 'summary: "{{ $labels.model }} at {{ $value | humanizePercentage }}", "legendFormat": "{{model}} {{status}}"'
    assert check_unrendered(ok) == []
    for leftover in ("x: {{ .Values.a }}", '{{- include "x" . }}', "x: {{ $ns }}", "a }}"):
        assert check_unrendered(leftover), leftover


def test_missing_crd_folder_is_a_clear_error(monkeypatch, tmp_path):
    from harness import validate

    with pytest.raises(ManifestError, match="LLM_CHARTS_CRDS_DIR"):
        validate.crd_schemas(str(tmp_path / "nowhere"))


# Kinds the charts render today or later issues validate (KEDA, inference, LWS, alerts, Argo CD).
PINNED_KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("networking.istio.io/v1", "VirtualService"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"),
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
}


def test_the_pinned_crds_hold_every_kind_the_project_validates(monkeypatch):
    from harness import validate

    monkeypatch.delenv("LLM_CHARTS_CRDS_DIR", raising=False)
    missing = PINNED_KINDS - set(validate.crd_schemas(str(paths.crds_dir())))
    assert not missing, sorted(missing)


def test_a_crd_that_does_not_match_its_pin_is_refused(monkeypatch, tmp_path):
    from harness.tools import ToolError, bootstrap

    pin = dict(bootstrap.VERSIONS["crds"]["keda"])
    last = list(pin["files"])[-1]  # the others match: none of them may be copied either
    pin["files"] = {**pin["files"], last: "0" * 64}
    monkeypatch.setitem(bootstrap.VERSIONS, "crds", {"keda": pin})
    monkeypatch.setenv("LLM_CHARTS_TOOLS_DIR", str(tmp_path))
    monkeypatch.delenv("LLM_CHARTS_CRDS_DIR", raising=False)
    with pytest.raises(
        ToolError,
        match=rf"{last} of github.com/kedacore/keda/v2@v2.20.2 has sha256 [0-9a-f]{{64}}, "
        rf"but tools/versions.json pins 0{{64}}",
    ):
        bootstrap.pinned_crds()
    assert not list((tmp_path / "crds").rglob("*.yaml")), "files of a source that failed its check were copied"


def test_an_edited_cached_crd_is_replaced_by_the_pinned_one(monkeypatch, tmp_path):
    from harness.tools import bootstrap

    pin = bootstrap.VERSIONS["crds"]["keda"]
    monkeypatch.setitem(bootstrap.VERSIONS, "crds", {"keda": pin})
    monkeypatch.setenv("LLM_CHARTS_TOOLS_DIR", str(tmp_path))
    monkeypatch.delenv("LLM_CHARTS_CRDS_DIR", raising=False)
    cached = bootstrap.pinned_crds() / "keda" / "keda.sh_scaledobjects.yaml"
    cached.write_text("edited")
    (cached.parent.parent / "dropped-source").mkdir()
    bootstrap.pinned_crds()
    assert bootstrap._sha256(cached) == pin["files"]["config/crd/bases/keda.sh_scaledobjects.yaml"]
    assert not (cached.parent.parent / "dropped-source").exists()


def test_a_crd_folder_override_that_does_not_exist_names_the_setting(monkeypatch, tmp_path):
    from harness.tools import ToolError, bootstrap

    monkeypatch.setenv("LLM_CHARTS_CRDS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ToolError, match="LLM_CHARTS_CRDS_DIR=.*nowhere: no such folder"):
        bootstrap.crds_dir()

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


def test_missing_crd_folder_is_a_clear_error(monkeypatch, tmp_path):
    from harness import validate
    with pytest.raises(ManifestError, match="LLM_CHARTS_CRDS_DIR"):
        validate.crd_schemas(str(tmp_path / "nowhere"))

"""Rules that hold for every chart and every ci/*-values.yaml: charts/* and the top-level argocd/,
istio/ and gateway-api/ alike (the one list is harness.paths.charts())."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from harness import paths
from harness.render import HELM_VERSIONS, HelmError, parse_manifests, render_chart, render_text, run_helm
from harness.validate import KUBE_VERSIONS, check_names, check_unrendered, validate_manifest

CI_FILES = paths.ci_values_files()
CHARTS = paths.application_charts()


def _id(path):
    return f"{path.parent.parent.name}/{path.name}"


def _chart(values_file):
    return values_file.parent.parent


def _key(m):
    return (m["kind"], m["metadata"]["name"])


@pytest.fixture(params=CI_FILES, ids=[_id(p) for p in CI_FILES])
def ci_file(request):
    return request.param


def test_every_chart_has_ci_values():
    assert CHARTS, "no charts found"
    for chart in CHARTS:
        assert list((chart / "ci").glob("*-values.yaml")), f"{chart.name}: no ci/*-values.yaml"


def _schema_errors(chart, values: dict) -> list[str]:
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return [
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(values)
    ]


def test_values_file_matches_chart_schema(ci_file):
    assert not _schema_errors(_chart(ci_file), yaml.safe_load(ci_file.read_text()) or {})


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_chart_defaults_match_the_chart_schema(chart):
    assert not _schema_errors(chart, yaml.safe_load((chart / "values.yaml").read_text()) or {})


def test_helm3_and_helm4_render_the_same_objects(ci_file):
    rendered = {h: render_chart(_chart(ci_file), values_files=[ci_file], helm=h) for h in HELM_VERSIONS}
    by_key = {h: {_key(m): m for m in ms} for h, ms in rendered.items()}
    assert sorted(by_key["helm3"]) == sorted(by_key["helm4"])
    for key, obj in by_key["helm3"].items():
        assert obj == by_key["helm4"][key], f"{key} differs between Helm 3 and Helm 4"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_pass_strict_schema_validation(ci_file, kube_version):
    manifests = render_chart(_chart(ci_file), values_files=[ci_file], kube_version=f"v{kube_version}.0")
    for m in manifests:
        validate_manifest(m, kube_version)


def test_names_fit_and_nothing_is_left_unrendered(ci_file):
    text = render_text(_chart(ci_file), values_files=[ci_file])
    assert not check_unrendered(text)
    assert not check_names(parse_manifests(text))


def test_render_is_idempotent(ci_file):
    first = render_text(_chart(ci_file), values_files=[ci_file])
    assert first == render_text(_chart(ci_file), values_files=[ci_file])


@pytest.mark.parametrize("helm", HELM_VERSIONS)
def test_helm_lint_strict(ci_file, helm):
    proc = run_helm(["lint", "--strict", str(_chart(ci_file)), "--values", str(ci_file)], helm=helm, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# What a chart cannot default and must be given beside models.yaml (each one a template `fail`).
REQUIRED_VALUES = {"gateway-api": {"gateway": {"className": "example"}}}


@pytest.mark.parametrize("chart", paths.catalog_charts(), ids=lambda c: c.name)
def test_every_chart_renders_the_shared_model_list(chart):
    # Argo CD hands $values/models.yaml to every Application it deploys, so each of those charts takes it.
    manifests = render_chart(chart, REQUIRED_VALUES.get(chart.name), values_files=[paths.REPO / "models.yaml"])
    assert manifests, f"{chart.name} renders nothing with models.yaml"
    for m in manifests:
        validate_manifest(m, KUBE_VERSIONS[-1])


@pytest.mark.parametrize("chart", paths.charts(), ids=lambda c: c.name)
def test_changelog_has_an_entry_for_the_chart_version(chart):
    # CONTRIBUTING.md: every change raises the version and adds an entry; ct checks the raise.
    version = yaml.safe_load((chart / "Chart.yaml").read_text())["version"]
    changelog = chart / "CHANGELOG.md"
    assert changelog.is_file(), f"{chart.name}: no CHANGELOG.md"
    headings = re.findall(r"^## (\S+)", changelog.read_text(), re.M)
    assert headings, f"{changelog.relative_to(paths.REPO)}: no `## <version>` section"
    assert headings[0] == version, (
        f"{changelog.relative_to(paths.REPO)}: newest entry is {headings[0]}, "
        f"Chart.yaml says {version}: add a `## {version}` section on top"
    )


BAD_FILES = sorted(paths.BAD_VALUES.glob("*/*.yaml"))


def expected_message(path):
    """First line of a bad-values file: `# expect: <text helm must print>`."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path}: first line must be '# expect: <message>'"
    return first[len("# expect: ") :].strip()


@pytest.mark.parametrize("helm", HELM_VERSIONS)
@pytest.mark.parametrize("bad", BAD_FILES, ids=[f"{p.parent.name}/{p.name}" for p in BAD_FILES])
def test_bad_values_are_rejected_with_a_message_naming_the_key(bad, helm):
    with pytest.raises(HelmError) as err:
        render_chart(bad.parent.name, values_files=[bad], helm=helm)
    assert expected_message(bad) in err.value.stderr

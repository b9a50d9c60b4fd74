"""tools/ct_lint.py: which commit chart versions are compared with, and ct's check really failing
a changed chart that kept its version (real git, real ct and helm, in a throwaway repository)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths

sys.path.insert(0, str(paths.REPO / "tools"))
import ct_lint


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def write_chart(repo: Path, version: str, value: str = "a") -> None:
    chart = repo / "charts" / "demo"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: demo\ndescription: A chart for the version check test.\nversion: {version}\n"
        "maintainers:\n  - name: tests\n"
    )
    (chart / "values.yaml").write_text(f"value: {value}\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  value: {{ .Values.value | quote }}\n"
    )


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with one chart at 0.1.0 and a second commit that bumped it to 0.2.0."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_chart(root, "0.1.0")
    commit(root, "first")
    write_chart(root, "0.2.0", "b")
    commit(root, "second")
    monkeypatch.setattr(ct_lint, "REPO", root)
    monkeypatch.delenv("LLM_CHARTS_VERSION_BASE", raising=False)
    return root


CHARTS = ["charts/demo"]


def test_a_clean_tree_is_compared_with_the_previous_commit(repo):
    base, why = ct_lint.version_base(CHARTS)
    assert base == git(repo, "rev-parse", "HEAD~1") and "HEAD~1" in why
    assert ct_lint.changed_charts(base, CHARTS) == CHARTS


def test_uncommitted_chart_changes_are_compared_with_head(repo):
    (repo / "charts" / "demo" / "values.yaml").write_text("value: c\n")
    assert ct_lint.version_base(CHARTS) == (git(repo, "rev-parse", "HEAD"), "HEAD (uncommitted chart changes)")


def test_a_branch_ahead_of_its_upstream_is_compared_with_the_merge_base(repo, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    monkeypatch.setattr(ct_lint, "REPO", clone)
    upstream = git(clone, "rev-parse", "origin/main")
    # At the upstream and clean: CI's case, the last commit is checked.
    assert ct_lint.version_base(CHARTS)[0] == git(clone, "rev-parse", "HEAD~1")
    write_chart(clone, "0.3.0", "d")
    commit(clone, "third")
    write_chart(clone, "0.4.0", "e")
    commit(clone, "fourth")
    assert ct_lint.version_base(CHARTS) == (upstream, "merge base with origin/main")


def test_the_setting_wins_and_must_name_a_commit(repo, monkeypatch):
    monkeypatch.setenv("LLM_CHARTS_VERSION_BASE", "HEAD~1")
    assert ct_lint.version_base(CHARTS)[0] == git(repo, "rev-parse", "HEAD~1")
    monkeypatch.setenv("LLM_CHARTS_VERSION_BASE", "no-such-branch")
    with pytest.raises(ct_lint.LintError, match="LLM_CHARTS_VERSION_BASE=no-such-branch is not a commit"):
        ct_lint.version_base(CHARTS)


def test_a_shallow_clone_says_how_to_get_a_base(repo, tmp_path, monkeypatch):
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True)
    monkeypatch.setattr(ct_lint, "REPO", shallow)
    with pytest.raises(ct_lint.LintError, match="shallow clone without HEAD~1.*LLM_CHARTS_VERSION_BASE"):
        ct_lint.version_base(CHARTS)


def test_ct_fails_a_changed_chart_that_kept_its_version_and_passes_it_bumped(repo, capsys):
    if not (shutil.which("yamllint") and shutil.which("yamale") and shutil.which("helm")):
        pytest.fail("ct needs helm, yamllint and yamale on PATH: run this through `nox -s unit`")
    (repo / "charts" / "demo" / "values.yaml").write_text("value: changed\n")
    assert ct_lint.main([str(repo / "charts" / "demo")]) != 0
    assert "chart version not ok. Needs a version bump!" in capsys.readouterr().out
    write_chart(repo, "0.2.1", "changed")
    assert ct_lint.main([str(repo / "charts" / "demo")]) == 0
    out = capsys.readouterr().out
    assert "Old chart version: 0.2.0" in out and "New chart version: 0.2.1" in out
    assert not git(repo, "for-each-ref", f"refs/{ct_lint.REF_NAMESPACE}"), "the temporary ref was left behind"

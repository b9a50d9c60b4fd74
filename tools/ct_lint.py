#!/usr/bin/env python3
"""chart-testing's `ct lint` over the given charts, with its version-increment check on the changed ones.

    python3 tools/ct_lint.py CHART_DIR...      (nox -s lint passes every chart of tests/harness/paths.py)

ct checks versions only in its "changed charts" mode (it turns the check off for `--all` and
`--charts`): it lints the charts whose files differ from the merge base of `<remote>/<branch>`
and HEAD, and compares each one's version with the one on `<remote>/<branch>`. So this runs ct
twice: `--charts` for the charts that did not change, the changed mode for the others, against a
base commit chosen as in CONTRIBUTING.md:

1. $LLM_CHARTS_VERSION_BASE, any git revision, when set;
2. the merge base with the branch's upstream, when HEAD is ahead of it or the tree has changes;
3. HEAD when a chart has uncommitted changes, else HEAD~1 (a clean clone in CI: the last commit).

ct only takes the base as `<remote>/<branch>`: a temporary ref refs/llm-charts-ct/<pid> points at
it for the one ct call and is deleted afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import bootstrap

REPO = Path(__file__).resolve().parent.parent
REF_NAMESPACE = "llm-charts-ct"
NOT_A_CHART = re.compile(r'^Directory ".*" is not a valid chart directory\. Skipping\.\.\.$')
LINTED = re.compile(r'^ [✔✖]\S* .* => \(version: ".*", path: "(.*)"\)', re.M)


class LintError(RuntimeError):
    """The version check cannot run as configured; the message says how to fix it."""


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LintError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _rev(rev: str) -> str | None:
    proc = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def changed_charts(base: str, charts: list[str], *, untracked: bool = False) -> list[str]:
    """Charts with a tracked file that differs from `base` in the working tree: what ct's changed mode
    finds (`git diff --name-only`); with `untracked`, new unignored files count too."""
    files = _git("diff", "--find-renames", "--name-only", base, "--", *charts).stdout.split()
    if untracked:
        files += _git("ls-files", "--others", "--exclude-standard", "--", *charts).stdout.split()
    return [c for c in charts if any(f.startswith(c + "/") for f in files)]


def version_base(charts: list[str]) -> tuple[str | None, str]:
    """(commit to compare versions with, or None when there is nothing to compare; why that one)."""
    wanted = os.environ.get("LLM_CHARTS_VERSION_BASE")
    if wanted:
        sha = _rev(wanted)
        if not sha:
            raise LintError(f"LLM_CHARTS_VERSION_BASE={wanted} is not a commit here: fetch it or unset it.")
        return sha, f"LLM_CHARTS_VERSION_BASE={wanted}"
    head = _rev("HEAD")
    if head is None:
        return None, "no commit yet"
    dirty = bool(changed_charts("HEAD", charts, untracked=True))
    upstream = _git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}", check=False).stdout.strip()
    if upstream:
        merge_base = _git("merge-base", "HEAD", upstream).stdout.strip()
        if merge_base != head or dirty:
            return merge_base, f"merge base with {upstream}"
    if dirty:
        return head, "HEAD (uncommitted chart changes)"
    parent = _rev("HEAD~1")
    if parent:
        return parent, "HEAD~1 (clean tree: the last commit is checked)"
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        raise LintError(
            "shallow clone without HEAD~1: the version-increment check has nothing to compare with. "
            "Fetch more history (git fetch --deepen=1) or set LLM_CHARTS_VERSION_BASE."
        )
    return None, "HEAD is the first commit: every chart is new"


def ct_lint(charts: list[str], *, version_ref: str | None) -> int:
    """`ct lint --charts` (no version check), or with version_ref ct's changed mode, which must lint
    exactly `charts`."""
    ct_etc = bootstrap.ct_config_dir()
    args = [
        str(bootstrap.go_tool("ct")),
        "lint",
        "--validate-maintainers=false",
        "--chart-dirs",
        ",".join(sorted({str(Path(c).parent) for c in charts})),
        "--chart-yaml-schema",
        str(ct_etc / "chart_schema.yaml"),
        "--lint-conf",
        str(ct_etc / "lintconf.yaml"),
    ]
    if version_ref:
        remote, branch = version_ref.split("/", 1)
        args += ["--check-version-increment=true", "--remote", remote, "--target-branch", branch]
    else:
        args += ["--charts", ",".join(charts)]
    print("+", " ".join(args), flush=True)
    proc = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # With "." among the chart dirs, ct names every changed file outside a chart: not news.
    print("\n".join(line for line in proc.stdout.splitlines() if not NOT_A_CHART.match(line)), flush=True)
    linted = set(LINTED.findall(proc.stdout))
    if version_ref and linted != set(charts):
        print(f"error: ct's changed mode linted {sorted(linted)}, expected {sorted(charts)}", file=sys.stderr)
        return 1
    return proc.returncode


def main(argv: list[str]) -> int:
    charts = [str(Path(c).resolve().relative_to(REPO)) for c in argv]
    if not charts:
        print("usage: tools/ct_lint.py CHART_DIR...", file=sys.stderr)
        return 2
    try:
        base, why = version_base(charts)
        changed = changed_charts(base, charts) if base else []
    except LintError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"[ct_lint] version-increment base: {base[:12] if base else 'none'} ({why}); "
        f"changed charts: {', '.join(changed) or 'none'}",
        flush=True,
    )
    rc = 0
    unchanged = [c for c in charts if c not in changed]
    if unchanged:
        rc |= ct_lint(unchanged, version_ref=None)
    if changed and base:
        ref = f"refs/{REF_NAMESPACE}/{os.getpid()}"
        _git("update-ref", ref, base)
        try:
            # ct falls back to "new chart, no check" for a name git cannot resolve: make sure it resolves.
            if _rev(f"{REF_NAMESPACE}/{os.getpid()}") != base:
                raise LintError(f"{REF_NAMESPACE}/{os.getpid()} does not resolve to {base}")
            rc |= ct_lint(changed, version_ref=f"{REF_NAMESPACE}/{os.getpid()}")
        finally:
            _git("update-ref", "-d", ref)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

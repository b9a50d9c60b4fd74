"""Sessions for chart maintainers. Plain `nox` runs the fast default set.

nox                 lint + unit + gateway + monitoring (+ the sessions later issues add to the default set)
nox -s gateway      api-gateway on real nginx + Lua (Debian packages; installs them as root)
nox -s monitoring   the Grafana dashboard and PrometheusRule against promtool and real exporters
nox -s unit -- -k vllm     arguments after -- reach pytest
nox -s soak         10-minute gateway soak (opt-in); lint queues the checkov session
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests"))
from harness import paths  # noqa: E402  (the one list of charts; standard library only)

TOOLS_BIN = Path(os.environ.get("LLM_CHARTS_TOOLS_DIR", REPO / ".tools")) / "bin"
REQUIREMENTS = "tests/requirements.txt"
LINT_REQUIREMENTS = "tests/requirements-lint.txt"

nox.options.sessions = ["lint", "unit", "gateway", "monitoring"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _setup(session: nox.Session) -> dict[str, str]:
    """Install the pinned Python deps and build the pinned Go tools; return the env to run with."""
    session.install("-r", REQUIREMENTS)
    session.run("python", "tools/bootstrap.py")
    return {"PATH": os.pathsep.join([str(TOOLS_BIN), session.bin, os.environ["PATH"]])}


@nox.session
def unit(session: nox.Session) -> None:
    """Render tests: every chart and ci/*-values.yaml through Helm 3 and Helm 4, schemas, bad values."""
    env = _setup(session)
    session.run("python", "tools/sync_schemas.py", "--check")
    # The benchmark's own logic (ratios, targets) and the profiler's edits of the chart's
    # nginx.conf: fast, so they run here (a chart change that breaks them fails at once).
    bench = ["bench/test_bench.py", "bench/profilers/test_ablation.py"]
    session.run("pytest", "-c", "tests/pytest.ini", "tests/unit", *bench, *session.posargs, env=env)


@nox.session
def gateway(session: nox.Session) -> None:
    """api-gateway on a real nginx + Lua (Debian packages, installed as root) in front of mock backends."""
    env = _setup(session)
    session.run("python", "-m", "gateway.runner", env={**env, "PYTHONPATH": "tests"})
    session.run("pytest", "-c", "tests/pytest.ini", "tests/gateway", *session.posargs, env=env)


@nox.session
def monitoring(session: nox.Session) -> None:
    """api-gateway's Grafana dashboard and PrometheusRule: every query through Prometheus' PromQL parser,
    the rules through promtool (check, and unit tests of each alert firing), and every metric name
    against what the gateway on real nginx and a real llama-server export. Builds promtool and
    tools/promql on first use (minutes, cached in .tools/bin)."""
    env = _setup(session)
    session.install("-r", "tools/stack/requirements.txt")  # tinymodels: the llama-server's GGUF
    session.run("python", "-m", "gateway.runner", env={**env, "PYTHONPATH": "tests"})
    session.run("pytest", "-c", "tests/pytest.ini", "tests/monitoring", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ct lint over every chart (its version-increment check on the changed ones: tools/ct_lint.py),
    yamllint on Chart/values/ci files and rendered output, README tables, ruff and mypy, luacheck and
    the busted unit tests of the gateway's Lua."""
    env = _setup(session)
    session.install("-r", LINT_REQUIREMENTS)
    session.run("python", "tools/ct_lint.py", *[str(c.relative_to(REPO)) for c in paths.charts()], env=env)
    yaml_files = [
        str(p)
        for c in paths.charts()
        for p in [c / "Chart.yaml", *c.glob("values.yaml"), *sorted((c / "ci").glob("*.yaml"))]
    ]
    session.run("yamllint", "--strict", "-c", ".yamllint.yaml", "models.yaml", *yaml_files)
    rendered = REPO / "build" / "rendered"
    shutil.rmtree(rendered, ignore_errors=True)
    rendered.mkdir(parents=True)
    helm = str(TOOLS_BIN / "helm")
    for values in paths.ci_values_files():
        chart = values.parent.parent
        out = rendered / f"{chart.name}--{values.stem}.yaml"
        out.write_text(
            subprocess.run(
                [helm, "template", "lint", str(chart), "-f", str(values)], check=True, capture_output=True, text=True
            ).stdout
        )
    session.run("yamllint", "--strict", "-c", ".yamllint-rendered.yaml", str(rendered))
    _check_readmes(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # files and settings: pyproject.toml
    _lua(session)
    session.notify("checkov")  # heavy: its own venv


def _lua(session: nox.Session) -> None:
    """luacheck (std ngx_lua, no global writes: .luacheckrc) and busted over the gateway's Lua modules."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import bootstrap  # tools/bootstrap.py: the one place that installs system packages

    # luajit2: the LuaJIT nginx's Lua module links (the gateway uses its FFI), as the interpreter.
    bootstrap.debian_packages(
        ["lua-check", "lua-busted", "lua-cjson", "luajit2"], purpose="the Lua lint and unit tests"
    )
    lua = "charts/api-gateway/files/lua"
    session.run("luacheck", lua, "tests/lua", external=True)
    # busted under LuaJIT, with the Lua 5.1 modules Debian installs (busted, cjson) on its paths.
    cjson = sorted(glob.glob("/usr/lib/*/lua/5.1/cjson.so"))
    cpath = f"{Path(cjson[0]).parent}/?.so;" if cjson else ""
    setup = (
        'package.path="/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;"..package.path; '
        f'package.cpath="{cpath}"..package.cpath'
    )
    session.run(
        "luajit",
        "-e",
        setup,
        shutil.which("busted") or "/usr/bin/busted",
        f"--lpath={lua}/?.lua;tests/lua/?.lua",
        "tests/lua",
        external=True,
    )


def _helm_docs(chart_root: Path) -> None:
    subprocess.run(
        [str(TOOLS_BIN / "helm-docs"), "--chart-search-root", str(chart_root), "--log-level", "warning"], check=True
    )


def _check_readmes(session: nox.Session) -> None:
    """Fail when a chart README's parameter table no longer matches values.yaml."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for chart in paths.charts():
            copy = Path(tmp) / chart.name
            shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts"))
            _helm_docs(copy)
            if (copy / "README.md").read_text() != (chart / "README.md").read_text():
                stale.append(str(chart.relative_to(REPO)))
    if stale:
        session.error(f"README parameter tables out of date for {', '.join(stale)}: run `nox -s docs`")
    session.log("chart READMEs are up to date with values.yaml")


CHECKOV = "checkov==3.3.30"
CHECKOV_BASELINE = REPO / "tests" / "checkov-baseline.json"


@nox.session(default=False)
def checkov(session: nox.Session) -> None:
    """checkov's Helm scan (run by lint): fails on any finding not in tests/checkov-baseline.json and on
    baseline entries that no longer occur (the baseline only shrinks; `-- --prune` drops those)."""
    session.install(CHECKOV)
    session.run("python", "tools/bootstrap.py")  # helm in .tools/bin (checkov renders with it)
    out = REPO / "build" / "checkov"
    shutil.rmtree(out, ignore_errors=True)
    env = {"PATH": os.pathsep.join([str(TOOLS_BIN), session.bin, os.environ["PATH"]])}
    # CKV_K8S_21 (default namespace): checkov renders without --namespace; the charts take the release's.
    session.run(
        "checkov",
        "-d",
        "charts",
        "--framework",
        "helm",
        "--skip-download",
        "--quiet",
        "--compact",
        "--var-file",
        "models.yaml",
        "--skip-path",
        "model-catalog",
        "--skip-check",
        "CKV_K8S_21",
        "-o",
        "json",
        "--output-file-path",
        str(out),
        env=env,
        success_codes=[0, 1],
    )
    _checkov_gate(session, out / "results_json.json", prune="--prune" in session.posargs)


def _checkov_gate(session: nox.Session, results: Path, prune: bool) -> None:
    import json

    reports = json.loads(results.read_text())
    found = set()
    for report in reports if isinstance(reports, list) else [reports]:
        for f in report.get("results", {}).get("failed_checks", []):
            kind, _, name = f["resource"].split(".")[:3]  # Kind.namespace.name[.labels of a CKV2 Pod]
            found.add((f["check_id"], f["file_path"].strip("/").split("/")[0], f"{kind}/{name}"))
    baseline = json.loads(CHECKOV_BASELINE.read_text())
    known = {(e["check"], e["chart"], e["resource"]) for e in baseline["findings"]}
    new, gone = sorted(found - known), sorted(known - found)
    if gone and prune:
        baseline["findings"] = [e for e in baseline["findings"] if (e["check"], e["chart"], e["resource"]) in found]
        CHECKOV_BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
        session.log(f"checkov: dropped {len(gone)} fixed findings from {CHECKOV_BASELINE.name}")
    elif gone:
        session.error(
            f"checkov: fixed findings still in {CHECKOV_BASELINE.name} (the baseline only shrinks; "
            f"`nox -s checkov -- --prune`): {gone}"
        )
    if new:
        session.error(
            f"checkov: new findings (fix them; a stated exception goes into {CHECKOV_BASELINE.name} "
            f"with its reason in review): {new}"
        )
    unexplained = {c for c, _, _ in found} - set(baseline["reasons"])
    if unexplained:
        session.error(f"checkov: baseline checks without a reason: {sorted(unexplained)}")
    session.log(f"checkov: {len(found)} findings, all in the baseline")


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """Opt-in: the gateway soak for 10 minutes (GATEWAY_SOAK_SECONDS; the gateway session runs 20 s)."""
    env = _setup(session)
    session.run("python", "-m", "gateway.runner", env={**env, "PYTHONPATH": "tests"})
    seconds = os.environ.get("GATEWAY_SOAK_SECONDS", "600")
    session.run(
        "pytest",
        "-c",
        "tests/pytest.ini",
        "tests/gateway/test_reliability_soak.py",
        "-s",
        *session.posargs,
        env={**env, "GATEWAY_SOAK_SECONDS": seconds},
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate chart READMEs (helm-docs) and the shared schema copies (tools/sync_schemas.py)."""
    _setup(session)
    session.run("python", "tools/sync_schemas.py")
    for chart in paths.charts():
        _helm_docs(chart)


@nox.session
def e2e(session: nox.Session) -> None:
    """Slow, opt-in: the stack on a real cluster with the real engines (llama-server, vLLM on CPU,
    Open WebUI in headless Chromium), and every rendered engine command line started once
    (existing cluster, kind, or the local one of tools/localcluster; docs/e2e.md)."""
    env = _setup(session)
    session.install("-r", "tests/e2e/requirements.txt")
    session.run("pytest", "-c", "tests/pytest.ini", "tests/e2e", *session.posargs, env=env)


@nox.session
def demo(session: nox.Session) -> None:
    """The stack on the e2e cluster, left running: endpoints, one answer per model, how to open
    Open WebUI (`-- --vllm`: the vLLM models too; docs/e2e.md)."""
    env = _setup(session)
    session.install("-r", "tools/stack/requirements.txt")
    session.run("python", "tools/demo.py", "demo", *session.posargs, env=env)


@nox.session
def down(session: nox.Session) -> None:
    """Remove the demo stack and the cluster `demo`/`e2e` started (`-- --keep-cluster`: stack only)."""
    env = _setup(session)
    session.run("python", "tools/demo.py", "down", *session.posargs, env=env)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Gateway benchmarks: bench.run (direct, plain nginx, api-gateway, LiteLLM, onwards on
    loopback), then bench.affinity (prefix, least-request, round-robin and plain nginx in front of
    3 real llama-server replicas, on shared-prefix chat).

    Opt-in, minutes long, needs root on Debian for wrk/nginx (tools/bootstrap.py installs them).
    `-- --quick` smoke check (a few minutes); `-- --update-docs` writes the tables into
    docs/performance.md.
    """
    env = _setup(session)
    session.install("-r", "bench/requirements.txt")
    session.run("python", "-m", "bench.run", *session.posargs, env=env)
    affinity = [a for a in session.posargs if a in ("--quick", "--update-docs")]
    session.run("python", "-m", "bench.affinity", *affinity, env=env)

"""One-off profilers of the gateway, run by hand (docs/performance.md); no nox session runs them.

    python -m bench.profilers.ablation   # the chart's nginx.conf with one part taken out at a time
    python -m bench.profilers.perf       # Linux perf: a gateway worker vs a plain nginx worker
    python -m pytest -c tests/pytest.ini bench/profilers   # their own checks

Each one stops with a clear error when the chart's nginx.conf no longer matches the edits it makes.
"""

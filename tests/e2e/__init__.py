"""End-to-end tests on a real cluster with the real engines, and the engines' command lines on
this host. The tooling they use lives in tools/ (localcluster, stack, tinymodels, llamacpp).

Not part of `nox -s unit`; run with `nox -s e2e` (see docs/e2e.md).
"""

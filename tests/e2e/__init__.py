"""End-to-end tests on a real cluster: providers, images, the stack installed with Helm 3.

Not part of `nox -s unit`; run with `nox -s e2e` (see docs/e2e.md).
"""

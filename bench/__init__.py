"""Gateway benchmark (issue 9): `nox -s bench`, or `python -m bench.run` from the repo root."""

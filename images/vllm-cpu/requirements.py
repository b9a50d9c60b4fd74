"""Print a wheel's runtime requirements (extras dropped, markers evaluated), torch's local
version label (`+cpu`) removed, so pip can resolve them against PyPI."""
import re
import sys
import zipfile

from pip._vendor.packaging.requirements import Requirement

with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    lines = whl.read(meta).decode().splitlines()
for line in lines:
    if not line.startswith("Requires-Dist: "):
        continue
    req = Requirement(line.split(": ", 1)[1])
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(re.sub(r"(==[0-9.]+)\+\w+", r"\1", str(req)))

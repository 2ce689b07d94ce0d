"""atheris target: the package verifier (appliance.models.package) on any file, as a tar
and as a tar.gz. Allowed: a manifest, or PackageError naming the problem. Anything else
is a crash.

    PYTHONPATH=. .venv/bin/python tests/fuzz/fuzz_package.py -max_total_time=60 var/prove/corpus/package
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from appliance.errors import PackageError
    from appliance.models.package import verify_package

FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-package-"))


def one_input(data: bytes) -> None:
    path = FOLDER / "package.tar"
    path.write_bytes(gzip.compress(data[1:], 1) if data[:1] == b"z" else data)
    try:
        verify_package(path, None)
    except PackageError as exc:
        if not str(exc):
            raise AssertionError("a PackageError without its reason") from exc


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

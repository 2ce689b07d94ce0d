"""The atheris fuzz targets (tests/fuzz), bounded for CI: each runs a fixed number of
coverage-guided inputs from a fixed seed and must end without a crash (an exception its
target does not allow, a hang, a memory blow-up). ``scripts/prove`` runs them for time,
``--long`` for hours, on a corpus kept under var/prove."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", ["dicom_dataset", "pdu", "package"])
def test_a_bounded_fuzz_run_finds_no_crash(target, tmp_path):
    argv = [sys.executable, str(REPO / "tests" / "fuzz" / f"fuzz_{target}.py"), "-runs=4000", "-seed=20261207",
            "-rss_limit_mb=2048", "-timeout=20", f"-artifact_prefix={tmp_path}/crash-", str(tmp_path / "corpus")]
    (tmp_path / "corpus").mkdir()
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 4000 runs" in done.stderr
    assert not list(tmp_path.glob("crash-*"))

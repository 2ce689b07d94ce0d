"""The worker's BLAS setting: one thread per caller."""

from __future__ import annotations

import json
import subprocess
import sys

from scripts.harness import REPO

BLAS_THREADS = """
import json, sys
import numpy as np
from threadpoolctl import threadpool_info
from appliance.blas import one_blas_thread
if sys.argv[1] == "limited":
    one_blas_thread()
np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)
print(json.dumps([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]))
"""


def blas_threads(mode: str, env: dict[str, str]) -> list[int]:
    done = subprocess.run([sys.executable, "-c", BLAS_THREADS, mode], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    return json.loads(done.stdout)


def test_the_worker_setting_leaves_numpys_blas_one_thread_where_it_had_several():
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    assert blas_threads("default", env) == [2]  # numpy's OpenBLAS, as a two-core machine starts it
    assert blas_threads("limited", env) == [1]

"""The worker's allocator setting keeps a slice's temporaries from being faulted in afresh."""

from __future__ import annotations

import subprocess
import sys

from scripts.harness import REPO

#: Prepares a few head-CT slices to warm up, then counts the minor page faults per slice.
FAULTS_PER_SLICE = """
import resource, sys
import numpy as np
from appliance.allocator import keep_freed_memory
from appliance.triage import preprocess
if sys.argv[1] == "kept":
    assert keep_freed_memory()
windows = (*preprocess.HEAD_CT_WINDOWS, preprocess.BLOOD_WINDOW)
stored = np.random.default_rng(0).integers(-1000, 2000, (512, 512)).astype(np.int16)
for _ in range(3):
    preprocess.ct_slice_input(stored, 1.0, -1024.0, windows, 256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    preprocess.ct_slice_input(stored, 1.0, -1024.0, windows, 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_slice(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_SLICE, mode], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120)
    return float(done.stdout)


def test_kept_freed_memory_stops_each_slice_faulting_in_megabytes_of_fresh_pages():
    default, kept = faults_per_slice("default"), faults_per_slice("kept")
    assert default > 500  # about 1,500 pages (6 MiB) a 512x512 slice under glibc's defaults
    assert kept < 20

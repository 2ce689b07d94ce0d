"""One BLAS thread for each of the worker's threads.

The worker prepares arriving images on one thread per core, and each image's resize (and
a series' slab) is a run of small matrix products (``appliance.pixels``). OpenBLAS would
start threads of its own for each product, and the two preparing threads then wait on each
other's: 200 head-CT slices took 1.4-1.7 s to prepare on two threads that way, against
1.0 s with one BLAS thread (``docs/benchmarks.md``). OpenVINO and ONNX Runtime keep their
own thread pools and are not touched.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread() -> None:
    """Limit the BLAS libraries loaded in this process to one thread per caller, for good."""
    threadpool_limits(limits=1, user_api="blas")

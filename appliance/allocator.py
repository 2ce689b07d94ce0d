"""glibc's allocator set for a process that makes megabyte NumPy temporaries per image.

By default glibc serves an allocation above a threshold (128 KiB at first) with its own
``mmap`` and gives it back on ``free``, and gives the top of the heap back to the kernel
above twice that threshold. Preparing one 512x512 head-CT slice makes several 1-4 MiB
arrays (HU, four windows, the resampling passes), so every slice faulted in about 1,500
fresh zeroed pages (6 MiB) and preparing 200 slices took 2.5 s instead of 1.7 s on one
core (``docs/benchmarks.md``). :func:`keep_freed_memory` keeps such arrays in the heap and
keeps up to ``trim_mb`` of freed memory for the next slice. Elsewhere (musl, macOS) it does
nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_mb: int = 32, trim_mb: int = 64) -> bool:
    """Serve allocations up to ``mmap_mb`` from the heap and keep up to ``trim_mb`` of freed
    memory at its top; True when the C library took both settings."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_set = mallopt(M_MMAP_THRESHOLD, mmap_mb << 20) == 1
    return mallopt(M_TRIM_THRESHOLD, trim_mb << 20) == 1 and mmap_set

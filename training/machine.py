"""What machine a figure was measured on: the CPU and the flags INT8 kernels depend on."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def machine() -> str:
    """Short description of this machine's CPU and torch."""
    import torch

    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({name}), torch {torch.__version__}"


def cpu_flags() -> str:
    """The x86 integer-dot-product features of this CPU (what INT8 kernels depend on)."""
    try:
        flags = set(re.findall(r"\b(avx2|avx512_vnni|avx_vnni|amx_int8)\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        flags = set()
    return ", ".join(sorted(flags)) or "none of avx2/avx512_vnni/avx_vnni/amx_int8"

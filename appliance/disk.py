"""Free space in the data folder against the configured floor (``dicom.min_free_disk_mb``):
below it the listener refuses stores (0xA700), ``/readyz`` says not ready and an alert
goes out."""

from __future__ import annotations

import shutil
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def below_floor(data_dir: Path, floor_bytes: int) -> str | None:
    """Why the data folder's free space is below the floor, or None when it is not."""
    free = free_bytes(data_dir)
    if free >= floor_bytes:
        return None
    return f"{free >> 20} MiB free in {data_dir}, below the floor (dicom.min_free_disk_mb = {floor_bytes >> 20})"

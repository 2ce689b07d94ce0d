"""Request bodies streamed to disk under a size cap counted on the bytes actually read.

The Content-Length header is only a hint: a chunked body, or one that lies about its
length, is cut as soon as the bytes read pass the cap, and the partial file is removed.
What a killed process left half-written is removed when the web app starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from fastapi import Request

from appliance.errors import AccessError


class UploadTooLarge(AccessError):
    """The body passed the size cap; nothing of it was kept."""


def upload_dir(data_dir: Path) -> Path:
    """Where uploads are received."""
    return data_dir / "uploads"


def remove_leftovers(folder: Path) -> None:
    """Remove every upload file in ``folder``: at start none is in flight, so each was left
    by a process killed while receiving or installing it."""
    for path in folder.glob("upload-*.part"):
        path.unlink(missing_ok=True)


#: How often (bytes received) the free space is looked at again while an upload streams.
FREE_SPACE_EVERY = 16 * 1024 * 1024


def _check_room(folder: Path, coming: int, min_free_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free - coming < min_free_bytes:
        raise AccessError(
            f"not enough free disk for the upload: {free // (1024 * 1024)} MiB free, "
            f"{min_free_bytes // (1024 * 1024)} MiB kept free for received images"
        )


async def receive_to_file(request: Request, folder: Path, cap_bytes: int, min_free_bytes: int = 0) -> Path:
    """Write the request body to a new file in ``folder``; remove it on any failure.

    ``min_free_bytes`` of the disk stay free (the DICOM spool's floor): checked against the
    declared length before reading, and again as the body streams.
    """
    folder.mkdir(parents=True, exist_ok=True)
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isdigit() else 0
    if length > cap_bytes:
        raise UploadTooLarge(f"the upload is larger than the limit of {cap_bytes // (1024 * 1024)} MiB")
    _check_room(folder, length, min_free_bytes)
    path = folder / f"upload-{secrets.token_hex(8)}.part"
    received = 0
    try:
        with open(path, "wb") as out:
            async for chunk in request.stream():
                if received // FREE_SPACE_EVERY != (received + len(chunk)) // FREE_SPACE_EVERY:
                    _check_room(folder, len(chunk), min_free_bytes)
                received += len(chunk)
                if received > cap_bytes:
                    raise UploadTooLarge(
                        f"the upload passed the limit of {cap_bytes // (1024 * 1024)} MiB and was discarded"
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise AccessError(f"the upload could not be written: {exc.strerror or exc}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if received == 0:
        path.unlink(missing_ok=True)
        raise AccessError("the upload was empty")
    return path

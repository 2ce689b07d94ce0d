"""The spool: received instances on local disk, written so that a crash loses nothing
that was acknowledged.

Layout: ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``, and ``<spool>/.incoming``
for files still being received (same file system, so the final rename is atomic).
UIDs are validated before they reach this module (:func:`appliance.dicom.validate.check_uid`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from appliance.errors import StorageError

INCOMING = ".incoming"


def instance_path(spool: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Where an instance lives in the spool (pure)."""
    return spool / study_uid / series_uid / f"{sop_uid}.dcm"


def incoming_dir(spool: Path) -> Path:
    """The folder for files still being received; created if missing."""
    path = spool / INCOMING
    path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(path: Path) -> None:
    """Create ``path`` and any missing parents, fsyncing each new entry's parent."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            pass
        fsync_dir(directory.parent)


def commit_file(received: Path, final: Path) -> None:
    """Move a fully received file into place durably.

    fsync of the data, rename into the final folder (replacing an older copy atomically),
    then fsync of that folder: once this returns, the file survives a power cut.
    """
    try:
        fd = os.open(received, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not final.parent.is_dir():
            _make_dirs_durably(final.parent)
        os.replace(received, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise StorageError(f"cannot commit {final.name} to the spool: {exc.strerror}") from exc


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system holding ``path``."""
    return shutil.disk_usage(path).free

"""The spool: received instances on local disk, written so that a crash loses nothing
that was acknowledged.

Layout: ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``, and ``<spool>/.incoming``
for files still being received (same file system, so the final rename is atomic).
UIDs are validated before they reach this module (:func:`appliance.receive.validate.check_uid`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from appliance.errors import StorageError

INCOMING = ".incoming"


def instance_path(spool: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Where an instance lives in the spool (pure). Missing study or series UIDs (which
    some senders omit) get folder names that no UID can take."""
    return spool / (study_uid or "no-study") / (series_uid or "no-series") / f"{sop_uid}.dcm"


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
    """Move a received file, already fsynced, into place durably.

    Rename into the final folder (replacing an older copy atomically), then fsync of that
    folder: once this returns, the file survives a power cut.
    """
    try:
        if not final.parent.is_dir():
            _make_dirs_durably(final.parent)
        os.replace(received, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise StorageError(f"cannot commit {final.name} to the spool: {exc.strerror}") from exc


class IncomingFile:
    """A file being received: File Meta first, then dataset fragments as they arrive.

    The dataset's sha256 is computed on the way in, so nothing is read back.
    """

    def __init__(self, directory: Path, file_meta: bytes):
        self.path = directory / f"{uuid.uuid4().hex}.part"
        self.dataset_offset = len(file_meta)
        self.dataset_size = 0
        self._digest = hashlib.sha256()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            self._write(file_meta)
        except OSError:
            self.discard()  # no partial file is left behind
            raise

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def append(self, fragment: bytes | memoryview) -> None:
        self._write(fragment)
        self._digest.update(fragment)
        self.dataset_size += len(fragment)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def sync_and_close(self) -> None:
        """fsync the data and close; the file is then ready for :func:`commit_file`."""
        try:
            os.fsync(self._fd)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

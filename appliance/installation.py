"""The install identity: a random UUID created once in the data folder and kept for good.

This module is the one reader and writer of ``<data_dir>/install-id``. The identity feeds
every result UID (with the source series UID and the generation) and the Device Observer
UID, so two appliances, or one appliance reinstalled with a fresh data folder, never
produce the same UID. The file lives in the data folder, so it survives restarts and
upgrades and travels with a backup of that folder; deleting it makes a new appliance.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from appliance.errors import StorageError

FILE_NAME = "install-id"


def install_id(data_dir: Path) -> str:
    """The install identity of the appliance whose data folder is ``data_dir``.

    Created on first use (written to a temporary file, fsynced, then linked into place
    so two processes starting together agree on one value); read on every later call.

    Returns
    -------
    str
        A UUID in canonical lower-case form.

    Raises
    ------
    StorageError
        If the file exists but does not hold a UUID, or cannot be written.
    """
    path = data_dir / FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(str(uuid.uuid4()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        directory = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise StorageError(f"cannot write the install identity {path}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    text = path.read_text(encoding="ascii").strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise StorageError(f"{path} does not hold a UUID; restore it from a backup") from None

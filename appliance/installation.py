"""The install identity: a random UUID created once in the data folder and kept for good.

This module is the one reader and writer of ``<data_dir>/install-id``. The identity feeds
every result UID (with the source series UID and the generation) and the Device Observer
UID, so two appliances, or one appliance reinstalled with a fresh data folder, never
produce the same UID. The file lives in the data folder, so it survives restarts and
upgrades and travels with a backup of that folder; deleting it makes a new appliance.

It is also the one writer of the ``uid_epochs`` table: the epoch a restore starts, which
joins the identity in every result UID derived after it.
"""

from __future__ import annotations

import os
import sqlite3
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
    return _create(data_dir, str(uuid.uuid4()))


def adopt_install_id(data_dir: Path, identity: str) -> str:
    """Give the data folder ``data_dir`` the identity ``identity`` (a restore: the box
    keeps its Device Observer UID), unless it already has one.

    Raises
    ------
    StorageError
        The folder belongs to another appliance (another identity), or the file cannot
        be written.
    """
    path = data_dir / FILE_NAME
    try:
        current = _read(path)
    except FileNotFoundError:
        current = _create(data_dir, str(uuid.UUID(identity)))
    if current != identity:
        raise StorageError(
            f"{path} names appliance {current}, the backup appliance {identity}: restore into that "
            "appliance's data folder or into an empty one"
        )
    return current


def _create(data_dir: Path, identity: str) -> str:
    """Write ``identity`` as the folder's install identity unless another process wrote
    one first; return the one that won."""
    path = data_dir / FILE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(identity + "\n")
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


def uid_epoch(conn: sqlite3.Connection) -> str:
    """The current UID epoch: ``""`` until the first restore, then the latest one's token.

    The result UIDs are derived from the install identity and this epoch (see
    :class:`appliance.report.ResultUids`), so objects built after a restore get UIDs the
    box never issued before, whatever the restored database remembers."""
    row = conn.execute("SELECT epoch FROM uid_epochs ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else ""


def start_uid_epoch(conn: sqlite3.Connection, reason: str, now: float) -> str:
    """Start a new, random UID epoch (inside the caller's transaction) and return it."""
    epoch = uuid.uuid4().hex
    conn.execute("INSERT INTO uid_epochs (epoch, reason, started_at) VALUES (?, ?, ?)", (epoch, reason, now))
    return epoch

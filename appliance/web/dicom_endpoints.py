"""Adding and removing DICOM peers and destinations from the admin page, audited.

The changes live in ``<data_dir>/dicom-endpoints.json`` as additions and removals on top of
what the configuration file and the environment say (:func:`appliance.config.read_local_dicom`
reads them back in :func:`~appliance.config.load_settings`). The shipped configuration file
is never rewritten. The DICOM listener and the sender read their peers and destinations when
they start: a change here takes effect when the appliance service is restarted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from appliance.audit import chain as audit_log
from appliance.config import LOCAL_DICOM_KINDS, Settings, local_dicom_path, read_local_dicom, with_local_dicom
from appliance.db import transaction
from appliance.errors import ConfigError

FIELD = {"peers": "peer", "destinations": "destination"}
FORMAT = {"peers": "AE@address", "destinations": "AE@host:port"}


def canonical(kind: str, text: str) -> str:
    """``text`` checked as the configuration checks it, in its canonical form.

    Raises
    ------
    ConfigError
        Naming the field (``peer`` or ``destination``) and what is wrong.
    """
    if kind not in LOCAL_DICOM_KINDS:
        raise ConfigError(f"kind: {kind!r} is not peers or destinations")
    try:
        return LOCAL_DICOM_KINDS[kind].parse(text).text
    except ValueError as exc:
        raise ConfigError(f"{FIELD[kind]}: {exc} (expected {FORMAT[kind]})") from None


def saved(settings: Settings) -> Settings:
    """The settings as the next start will see them: ``settings`` (as this process started
    with them) with the changes saved since applied. Additions and removals only ever move
    between the two lists, so applying the current file on top gives the same lists as
    applying it to the configuration file's."""
    return with_local_dicom(settings, read_local_dicom(local_dicom_path(settings.data_dir)))


def change(conn: sqlite3.Connection, settings: Settings, kind: str, action: str, text: str, actor: str) -> str:
    """Add or remove one peer or destination; audited in the same transaction.

    Removing an entry added here (or adding back one removed here) undoes that change, so
    the file keeps no trace of it: an entry later listed in the configuration or the
    environment is then in force, not silently suppressed.

    Parameters
    ----------
    conn : sqlite3.Connection
        The appliance database (for the audit log; its write lock also serialises editors).
    settings : Settings
        The settings this process runs with (for ``data_dir`` and the current lists).
    kind : {"peers", "destinations"}
    action : {"add", "remove"}
    text : str
        ``AE@address`` for a peer, ``AE@host:port`` for a destination.
    actor : str
        Who asked, for the audit log.

    Returns
    -------
    str
        The entry in canonical form.

    Raises
    ------
    ConfigError
        A malformed entry, one already listed (add) or not listed (remove).
    """
    entry = canonical(kind, text)
    if action not in ("add", "remove"):
        raise ConfigError(f"action: {action!r} is not add or remove")
    path = local_dicom_path(settings.data_dir)
    with transaction(conn):
        local = read_local_dicom(path)
        current = {e.text for e in getattr(with_local_dicom(settings, local).dicom, kind)}
        if action == "add" and entry in current:
            raise ConfigError(f"{FIELD[kind]}: {entry} is already listed")
        if action == "remove" and entry not in current:
            raise ConfigError(f"{FIELD[kind]}: {entry} is not listed")
        into, out_of = ("added", "removed") if action == "add" else ("removed", "added")
        undoes = entry in local[kind][out_of]
        if undoes:  # back to what the configuration file and the environment say
            local[kind][out_of].remove(entry)
        else:
            local[kind][into].append(entry)
        details = {FIELD[kind]: entry, "actor": actor, "effective": "after a restart"}
        audit_log.append_in(
            conn,
            f"dicom-{FIELD[kind]}-{'added' if action == 'add' else 'removed'}",
            {**details, "undoes": f"the saved {'removal' if action == 'add' else 'addition'}"} if undoes else details,
        )
        _write(path, local)  # inside the transaction: a failed write leaves no audit row
    return entry


def listing(settings: Settings, kind: str) -> list[tuple[str, str]]:
    """``(entry, where it comes from)`` of every peer or destination the next start uses,
    then those removed here: ``configuration``, ``added here`` or ``removed here``."""
    local = read_local_dicom(local_dicom_path(settings.data_dir))[kind]
    in_force = [e.text for e in getattr(saved(settings).dicom, kind)]
    rows = [(text, "added here" if text in local["added"] else "configuration") for text in in_force]
    return rows + [(text, "removed here") for text in local["removed"]]


def _write(path: Path, local: dict) -> None:
    """Replace ``path`` atomically (write, fsync, rename) so a crash leaves old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(local, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)

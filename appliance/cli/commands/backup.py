"""``backup``: a verified copy of the database, taken while the appliance runs;
``restore``: that copy put back in service, here or in a data folder at another path."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from appliance import __version__, installation
from appliance.cli.commands.common import actor
from appliance.errors import StorageError
from appliance.parts import Parts
from appliance.states import JobState
from appliance.sync import withdrawals


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser("backup", help="copy the database (SQLite online backup) into a dated file and verify it")
    backup.add_argument(
        "--out",
        type=Path,
        help="a new file, or a folder for appliance-<UTC time>.db (default: <data_dir>/backups)",
    )
    backup.set_defaults(func=backup_command)
    restore = sub.add_parser(
        "restore",
        help="put a backup in service in this data folder (services stopped); result UIDs start a new epoch",
    )
    restore.add_argument("backup", type=Path, help="a file `appliance backup` wrote")
    restore.add_argument(
        "--replace",
        action="store_true",
        help="set the database already in the data folder aside (kept, renamed) instead of refusing",
    )
    restore.add_argument(
        "--from-data-dir",
        type=Path,
        help="the data folder the backup was taken in, for a backup without a manifest (taken by hand)",
    )
    restore.add_argument(
        "--allow-missing",
        action="store_true",
        help="restore even when files the restored queue, outbox or models need are missing here "
        "(their series fail with the reason, the objects are dead-lettered)",
    )
    restore.set_defaults(func=restore_command)


def backup_command(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.audit.chain import AUDIT_ROWS, append, verify_chain, verify_database
    from appliance.db import backup_database, dated_backup_path

    settings = parts.settings
    out = args.out or settings.data_dir / "backups"
    now = datetime.now(UTC)
    target = dated_backup_path(out, now) if args.out is None or out.is_dir() else out
    db = parts.database()
    # The live log against its anchor (which lives beside the live database, never in a
    # backup), then the copy's own chain: rows appended in between are covered by the chain.
    problems = verify_database(db)
    manifest = {
        "data_dir": str(settings.data_dir),
        "data_dir_resolved": str(settings.data_dir.resolve()),
        "version": __version__,
        "schema": str(db.conn.execute("PRAGMA user_version").fetchone()[0]),
        "taken_at": now.isoformat(),
        "install_id": parts.install_id,
    }
    backup_database(db.conn, target, manifest)
    with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
        problems += verify_chain(copy.execute(AUDIT_ROWS))
    for problem in problems:
        print(f"backup {target}: audit seq {problem.seq}: {problem.problem}")
    append(db, "backup", {"file": str(target), "audit_intact": not problems, "actor": actor()})
    if problems:
        return 1
    print(f"backup written and verified (integrity check, audit chain): {target}")
    return 0


def restore_command(args: argparse.Namespace, parts: Parts) -> int:
    """Check the backup, copy it in beside the database, move its paths to this data
    folder, check the files it needs are here, put it in place, start a new UID epoch and
    audit the restore (the anchor restarts from the restored log's head)."""
    from appliance.audit.chain import AUDIT_ROWS, append_in, verify_chain
    from appliance.db import MIGRATIONS, backup_manifest, open_database, rebase_paths, transaction
    from appliance.status import missing_files, missing_files_words

    settings = parts.settings
    _refuse_while_running(settings)
    source: Path = args.backup
    if not source.is_file():
        raise StorageError(f"{source}: no such backup file")
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as copy:
        try:
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            schema = copy.execute("PRAGMA user_version").fetchone()[0]
            manifest = backup_manifest(copy) or {}
            chain = verify_chain(copy.execute(AUDIT_ROWS))
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{source} is not an appliance backup: {exc}") from exc
    if check != "ok":
        raise StorageError(f"{source} fails integrity_check ({check}): not restored")
    if schema > len(MIGRATIONS):
        raise StorageError(
            f"{source} has schema {schema}, newer than the {len(MIGRATIONS)} appliance {__version__} knows: "
            f"restore it with the release that took it ({manifest.get('version', 'unknown')})"
        )
    if chain:
        raise StorageError(f"{source}: the audit chain breaks at seq {chain[0].seq} ({chain[0].problem}): not restored")
    taken_in = [manifest.get("data_dir", ""), manifest.get("data_dir_resolved", "")]
    if args.from_data_dir:
        taken_in = [str(args.from_data_dir), str(args.from_data_dir.resolve())]
    if not any(taken_in):
        raise StorageError(
            f"{source} has no manifest saying which data folder it was taken in (a copy made by hand): "
            "give it with --from-data-dir"
        )
    target = settings.db_path
    if target.exists() and not args.replace:
        raise StorageError(
            f"{target} exists: stop the services and give --replace to set it aside, or restore elsewhere"
        )
    data_dir = settings.data_dir
    carried = _withdrawals_known(target)

    incoming = target.with_name(target.name + ".restoring")
    incoming.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _copy_private(source, incoming)
        with closing(sqlite3.connect(incoming, isolation_level=None)) as conn:
            with transaction(conn):
                moved = rebase_paths(conn, taken_in, data_dir)
            missing = missing_files(conn)
        if missing and not args.allow_missing:
            raise StorageError(
                f"not restored: {missing_files_words(missing)}; copy the data folder's spool, results and "
                "models from where the backup was taken, or give --allow-missing"
            )
        if manifest.get("install_id"):
            installation.adopt_install_id(data_dir, manifest["install_id"])
        set_aside = _set_aside(target)
        os.replace(incoming, target)
    finally:
        incoming.unlink(missing_ok=True)
    db = open_database(target)  # migrates a backup of an older release
    with transaction(db.conn) as conn:
        epoch = installation.start_uid_epoch(conn, f"restore of {source.name}", time.time())
        head = conn.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
        append_in(
            conn,
            "restore",
            {
                "file": str(source),
                "taken_at": manifest.get("taken_at"),
                "taken_by_version": manifest.get("version"),
                "taken_in": taken_in[0],
                "restored_head_seq": head,
                "paths_moved": moved,
                "files_missing": len(missing),
                "uid_epoch": epoch,
                "set_aside": [str(p) for p in set_aside],
                "actor": actor(),
            },
        )
    # The hub lists every withdrawal at each check-in; until the next round, the replaced
    # database's list keeps a release withdrawn after the backup from running again in shadow.
    dropped = withdrawals.apply(db.conn, parts.registry(db), carried) if carried else []
    in_flight = db.conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (JobState.QUEUED, JobState.RUNNING)
    ).fetchone()[0]
    print(
        f"restored {source} (taken {manifest.get('taken_at', 'at an unknown time')} by appliance "
        f"{manifest.get('version', '?')} in {taken_in[0]}) into {target}: {moved} paths moved to {data_dir}, "
        f"{in_flight} series to triage again, result UIDs in a new epoch"
    )
    for path in set_aside:
        print(f"set aside: {path}")
    if carried:
        print(
            f"{len(carried)} release withdrawal(s) the replaced database knew of applied again"
            + (f"; no longer in shadow: {', '.join(dropped)}" if dropped else "")
        )
    if missing:
        print(f"warning: {missing_files_words(missing)}")
    return 0


def _withdrawals_known(database: Path) -> list[dict[str, str]]:
    """The releases the hub had withdrawn, as the database about to be replaced recorded
    them (none when there is no database, or it predates the table)."""
    if not database.exists():
        return []
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute("SELECT model_id, version FROM sync_withdrawals").fetchall()
        except sqlite3.DatabaseError:
            return []
    return [{"model_id": model_id, "version": version} for model_id, version in rows]


def _refuse_while_running(settings) -> None:
    """A restore under a running listener or worker would be overwritten or half-seen."""
    host = "127.0.0.1" if settings.dicom.bind_address in ("0.0.0.0", "") else settings.dicom.bind_address
    try:
        with socket.create_connection((host, settings.dicom.port), timeout=2):
            pass
    except OSError:
        return
    raise StorageError(
        f"the DICOM port {settings.dicom.port} is accepting: stop the appliance (systemctl stop appliance) "
        "before a restore"
    )


def _copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` into the new file ``target`` (0600), fsynced."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def _set_aside(database: Path) -> list[Path]:
    """Rename the database, its WAL files and its audit anchor (one left by a data folder
    copied from a later point would name rows the restored log lacks) with a dated suffix,
    kept, never deleted; return the new names."""
    from appliance.audit.anchor import anchor_path

    suffix = f".replaced-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    moved = []
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), anchor_path(database)):
        if path.exists():
            os.replace(path, path.with_name(path.name + suffix))
            moved.append(path.with_name(path.name + suffix))
    return moved

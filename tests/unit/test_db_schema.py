"""Schema versions (issue 23): a database written by a newer release is refused at start,
with the reason, instead of being used by code that does not know its tables; one written
by an older release is backed up before it is migrated, and that backup restores."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from appliance import __version__
from appliance import db as db_module
from appliance.audit.chain import AUDIT_ROWS, append, verify_chain, verify_database
from appliance.cli import main
from appliance.db import MIGRATIONS, backup_manifest, open_database
from appliance.errors import StorageError
from appliance.installation import install_id
from scripts.harness import REPO, free_port


def newer_database(path) -> None:
    open_database(path).conn.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")


def test_a_newer_schema_is_refused(tmp_path):
    newer_database(tmp_path / "appliance.db")
    with pytest.raises(StorageError, match=rf"schema {len(MIGRATIONS) + 1}, newer than the {len(MIGRATIONS)}"):
        open_database(tmp_path / "appliance.db")


def test_a_command_on_a_newer_schema_exits_with_the_reason(tmp_path):
    newer_database(tmp_path / "appliance.db")
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "status", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"APPLIANCE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "restore the backup taken before that upgrade" in done.stderr


def older_database(path, monkeypatch) -> None:
    """A database as the release before this one left it: its schema one migration short,
    with audit rows and an installed identity."""
    with monkeypatch.context() as older:
        older.setattr(db_module, "MIGRATIONS", MIGRATIONS[:-1])
        db = open_database(path)
        for n in range(3):
            append(db, "test-event", {"n": n})
        db.conn.close()
    install_id(path.parent)


def test_an_older_schema_is_backed_up_before_it_is_migrated(tmp_path, monkeypatch, caplog):
    database = tmp_path / "data" / "appliance.db"
    older_database(database, monkeypatch)
    caplog.set_level(logging.INFO, logger="appliance.db")
    db = open_database(database)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    (kept,) = (tmp_path / "data" / "backups").iterdir()
    assert kept.name.startswith(f"appliance-schema-{len(MIGRATIONS) - 1}-before-{len(MIGRATIONS)}-")
    with closing(sqlite3.connect(kept)) as copy:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) - 1
        assert verify_chain(copy.execute(AUDIT_ROWS)) == [] and len(copy.execute(AUDIT_ROWS).fetchall()) == 3
        manifest = backup_manifest(copy)
    assert manifest and manifest["schema"] == str(len(MIGRATIONS) - 1)
    assert manifest["install_id"] == install_id(tmp_path / "data")
    assert f"migrated schema {len(MIGRATIONS) - 1} to {len(MIGRATIONS)}" in manifest["reason"]
    assert f"backed up to {kept} before migrating" in caplog.text
    # a later start migrates nothing and backs up nothing
    db.conn.close()
    open_database(database).conn.close()
    assert len(list((tmp_path / "data" / "backups").iterdir())) == 1


def test_the_backup_taken_before_a_migration_restores(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    older_database(data / "appliance.db", monkeypatch)
    open_database(data / "appliance.db").conn.close()
    (kept,) = (data / "backups").iterdir()
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(data))
    monkeypatch.setenv("APPLIANCE_DICOM_PORT", str(free_port()))
    assert main(["restore", str(kept), "--replace"]) == 0
    db = open_database(data / "appliance.db")
    assert [kind for (kind,) in db.conn.execute("SELECT kind FROM audit_log ORDER BY seq")] == ["test-event"] * 3 + [
        "restore"
    ]
    assert verify_database(db) == []


def test_a_newer_schema_is_refused_naming_both_versions_and_not_backed_up(tmp_path):
    newer_database(tmp_path / "appliance.db")
    with pytest.raises(StorageError) as refused:
        open_database(tmp_path / "appliance.db")
    assert f"schema {len(MIGRATIONS) + 1}, newer than the {len(MIGRATIONS)} appliance {__version__} knows" in str(
        refused.value
    )
    assert not (tmp_path / "backups").exists()

"""``appliance backup`` and ``appliance restore`` (issue 23): SQLite's online backup into a dated file while another
connection holds an open write, verified (integrity check, audit chain), audited, 0600,
never overwriting a file."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import stat
from contextlib import closing
from datetime import UTC, datetime

import pytest

from appliance import __version__
from appliance.audit.chain import AUDIT_ROWS, append, verify_chain, verify_database
from appliance.cli import main
from appliance.db import MIGRATIONS, backup_database, backup_manifest, dated_backup_path, open_database, rebase_paths
from appliance.errors import StorageError
from appliance.installation import uid_epoch
from scripts.harness import free_port


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    db = open_database(data / "appliance.db")
    for n in range(3):
        append(db, "test-event", {"n": n})
    db.conn.close()
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(data))
    return data


def kinds(path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT kind FROM audit_log ORDER BY seq")]


def test_the_copy_holds_what_is_committed_while_a_write_is_open(data_dir, tmp_path):
    db = open_database(data_dir / "appliance.db")
    writer = open_database(data_dir / "appliance.db")
    writer.conn.execute("BEGIN IMMEDIATE")
    writer.conn.execute("UPDATE audit_log SET kind = 'uncommitted' WHERE seq = 1")
    try:
        backup_database(db.conn, tmp_path / "copy.db")
    finally:
        writer.conn.execute("ROLLBACK")
    copy = tmp_path / "copy.db"
    assert kinds(copy) == ["test-event"] * 3
    assert not list(tmp_path.glob("copy.db?*"))  # one self-contained file: no -wal, no .part
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert verify_chain(conn.execute(AUDIT_ROWS)) == []  # its anchor stays with the live database
    with pytest.raises(StorageError, match="never overwrites"):
        backup_database(db.conn, copy)


def test_dated_names_sort_by_time(tmp_path):
    when = datetime(2026, 12, 6, 17, 5, 9, tzinfo=UTC)
    assert dated_backup_path(tmp_path, when) == tmp_path / "appliance-20261206T170509Z.db"


def test_the_command_writes_a_dated_verified_file_and_audits_it(data_dir, capsys):
    assert main(["backup"]) == 0
    made = list((data_dir / "backups").iterdir())
    assert len(made) == 1 and re.fullmatch(r"appliance-\d{8}T\d{6}Z\.db", made[0].name)
    assert str(made[0]) in capsys.readouterr().out
    assert kinds(data_dir / "appliance.db")[-1] == "backup"
    assert kinds(made[0]) == ["test-event"] * 3


def test_the_command_refuses_to_overwrite_a_file(data_dir, tmp_path, capsys):
    target = tmp_path / "kept.db"
    target.write_bytes(b"an earlier backup")
    assert main(["backup", "--out", str(target)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert target.read_bytes() == b"an earlier backup"


def test_a_broken_audit_chain_in_the_copy_fails_the_command(data_dir, capsys):
    with closing(sqlite3.connect(data_dir / "appliance.db")) as conn, conn:
        conn.execute("UPDATE audit_log SET payload = '{\"n\":9}' WHERE seq = 2")
    assert main(["backup"]) == 1
    assert "audit seq 2" in capsys.readouterr().out


# ``appliance restore``: what it refuses, and what it does to paths, the anchor and UIDs.


@pytest.fixture
def backup(data_dir, tmp_path, monkeypatch):
    """A backup of ``data_dir`` whose index names one spooled file, and an empty data
    folder at another path (the environment now points there) to restore it into."""
    spooled = data_dir / "spool" / "s1" / "i1.dcm"
    spooled.parent.mkdir(parents=True)
    spooled.write_bytes(b"DICM")
    with closing(sqlite3.connect(data_dir / "appliance.db")) as conn, conn:
        conn.execute(
            "INSERT INTO series (series_instance_uid, study_instance_uid, state, first_received_at, "
            "last_received_at, updated_at) VALUES ('s1', 'st1', 'queued', 0, 0, 0)"
        )
        conn.execute(
            "INSERT INTO instances VALUES ('i1', 'st1', 's1', '1.2', '1.2.840.10008.1.2', 4, 'x', ?, 'CT', 'a1', 0)",
            (str(spooled),),
        )
    assert main(["backup", "--out", str(tmp_path / "b.db")]) == 0
    new = tmp_path / "moved" / "data"
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(new))
    monkeypatch.setenv("APPLIANCE_DICOM_PORT", str(free_port()))
    return tmp_path / "b.db", new


def test_a_backup_names_where_and_by_what_it_was_taken(backup, data_dir):
    file, _ = backup
    with closing(sqlite3.connect(file)) as conn:
        manifest = backup_manifest(conn)
    assert manifest is not None
    assert manifest["data_dir"] == str(data_dir) and manifest["version"] == __version__
    assert manifest["schema"] == str(len(MIGRATIONS))
    assert manifest["install_id"] == (data_dir / "install-id").read_text().strip()


def test_a_restore_without_the_files_it_needs_is_refused_and_changes_nothing(backup, capsys):
    file, new = backup
    assert main(["restore", str(file)]) == 2
    said = capsys.readouterr().err
    assert "not restored: 1 file that series in flight" in said and f"{new}/spool/s1/i1.dcm" in said
    assert not (new / "appliance.db").exists() and not list(new.glob("appliance.db*"))


def test_a_restore_moves_the_paths_restarts_the_anchor_and_starts_a_uid_epoch(backup, data_dir, capsys):
    file, new = backup
    shutil.copytree(data_dir / "spool", new / "spool")
    # a stale anchor (a data folder copied at a later point) would name rows the log lacks
    (new / "appliance.db.audit-anchor").write_text('{"seq": 99, "hash": "x", "mac": "y"}')
    assert main(["restore", str(file)]) == 0
    assert "1 paths moved" in capsys.readouterr().out
    db = open_database(new / "appliance.db")
    assert db.conn.execute("SELECT path FROM instances").fetchone()[0] == str(new / "spool" / "s1" / "i1.dcm")
    assert verify_database(db) == []
    assert kinds(new / "appliance.db")[-1] == "restore"
    assert backup_manifest(db.conn) is None
    first = uid_epoch(db.conn)
    assert first
    assert list(new.glob("appliance.db.audit-anchor.replaced-*"))
    # a second restore over it: refused without --replace, then a new epoch, the first set aside
    assert main(["restore", str(file)]) == 2
    assert main(["restore", str(file), "--replace"]) == 0
    again = open_database(new / "appliance.db")
    assert uid_epoch(again.conn) not in ("", first)
    assert list(new.glob("appliance.db.replaced-*"))
    assert (new / "install-id").read_text() == (data_dir / "install-id").read_text()


def test_a_restore_refuses_a_newer_schema_naming_both_versions(backup, capsys):
    file, _ = backup
    with closing(sqlite3.connect(file)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    assert main(["restore", str(file)]) == 2
    said = capsys.readouterr().err
    assert f"schema {len(MIGRATIONS) + 1}, newer than the {len(MIGRATIONS)} appliance {__version__}" in said
    assert f"the release that took it ({__version__})" in said


def test_a_restore_refuses_a_broken_chain_a_copy_without_manifest_and_a_running_box(backup, data_dir, capsys):
    file, new = backup
    with closing(sqlite3.connect(file)) as conn, conn:
        conn.execute("DROP TABLE backup_manifest")
    assert main(["restore", str(file)]) == 2
    assert "give it with --from-data-dir" in capsys.readouterr().err
    shutil.copytree(data_dir / "spool", new / "spool")
    assert main(["restore", str(file), "--from-data-dir", str(data_dir)]) == 0
    with closing(sqlite3.connect(file)) as conn, conn:
        conn.execute("UPDATE audit_log SET payload = '{\"n\":9}' WHERE seq = 2")
    assert main(["restore", str(file), "--replace", "--from-data-dir", str(data_dir)]) == 2
    assert "audit chain breaks at seq 2" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as running:
        os.environ["APPLIANCE_DICOM_PORT"] = str(running.getsockname()[1])
        assert main(["restore", str(file), "--replace"]) == 2
    assert "stop the appliance" in capsys.readouterr().err


def test_rebase_moves_only_paths_under_the_old_folder(tmp_path):
    db = open_database(tmp_path / "a.db")
    conn = db.conn
    conn.execute(
        "INSERT INTO instances VALUES ('i1', 's', 'r', 'c', 't', 1, 'x', '/old/data/spool/a.dcm', 'A', 'b', 0)"
    )
    conn.execute("INSERT INTO instances VALUES ('i2', 's', 'r', 'c', 't', 1, 'x', '/old/database/a.dcm', 'A', 'b', 0)")
    assert rebase_paths(conn, ["/old/data"], tmp_path / "new") == 1
    assert [r[0] for r in conn.execute("SELECT path FROM instances ORDER BY sop_instance_uid")] == [
        f"{tmp_path}/new/spool/a.dcm",
        "/old/database/a.dcm",
    ]

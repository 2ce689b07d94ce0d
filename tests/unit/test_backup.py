"""``appliance backup`` (issue 23): SQLite's online backup into a dated file while another
connection holds an open write, verified (integrity check, audit chain), audited, 0600,
never overwriting a file."""

from __future__ import annotations

import re
import sqlite3
import stat
from contextlib import closing
from datetime import UTC, datetime

import pytest

from appliance.audit.chain import AUDIT_ROWS, append, verify_chain
from appliance.cli import main
from appliance.db import backup_database, dated_backup_path, open_database
from appliance.errors import StorageError


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

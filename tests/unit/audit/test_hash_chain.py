from __future__ import annotations

import json
import stat

import pytest

from appliance.audit import chain
from appliance.db import MIGRATIONS, open_database, transaction


def test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named(tmp_path):
    db = open_database(tmp_path / "a.db")
    for n in range(5):
        chain.append(db, "association-rejected", {"n": n})
    assert chain.verify_database(db) == []

    db.conn.execute("UPDATE audit_log SET payload = '{\"n\":99}' WHERE seq = 3")
    assert [(p.seq, "edited" in p.problem) for p in chain.verify_database(db)] == [(3, True)]

    db = open_database(tmp_path / "b.db")
    for n in range(5):
        chain.append(db, "event", {"n": n})
    db.conn.execute("DELETE FROM audit_log WHERE seq = 2")
    problems = chain.verify_database(db)
    assert problems[0].seq == 3 and "missing" in problems[0].problem


def test_migrations_are_applied_once_and_reopening_keeps_data(tmp_path):
    db = open_database(tmp_path / "c.db")
    chain.append(db, "event", {})
    db.conn.close()
    again = open_database(tmp_path / "c.db")
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert again.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 1


def anchored_log(path, rows: int = 6):
    db = open_database(path)
    for n in range(rows):
        chain.append(db, "event", {"n": n})
    assert chain.verify_database(db) == []
    return db


def rehash_from(conn, first: int) -> None:
    """What someone with the database but not the device key can do: recompute the chain."""
    prev = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (first - 1,)).fetchone()[0]
    for seq, at, kind, payload in conn.execute(
        "SELECT seq, at, kind, payload FROM audit_log WHERE seq >= ? ORDER BY seq", (first,)
    ).fetchall():
        digest = chain.row_hash(prev, seq, at, kind, payload)
        conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        ("DELETE FROM audit_log WHERE seq > 4", "seq 6: rows missing"),  # A4-truncate-tail
        ("DELETE FROM audit_log", "seq 6: rows missing"),  # A6-delete-all
        ("UPDATE audit_log SET payload = 'edited' WHERE seq = 3", "seq 6: row hash differs"),  # A5
    ],
    ids=["A4-truncate-tail", "A6-delete-all", "A5-edit-and-rehash"],
)
def test_a_log_cut_short_emptied_or_rehashed_is_named_by_its_anchor(tmp_path, tamper, words):
    """Issue 24, A4 / A5 / A6. Before: each left a chain that verified as intact."""
    db = anchored_log(tmp_path / "appliance.db")
    db.conn.execute(tamper)
    if "UPDATE" in tamper:
        rehash_from(db.conn, 3)
    assert [p for p in chain.verify_chain(
        db.conn.execute("SELECT seq, at, kind, payload, prev_hash, hash FROM audit_log ORDER BY seq"))] == []
    problems = [f"seq {p.seq}: {p.problem}" for p in chain.verify_database(db)]
    assert any(p.startswith(words) for p in problems), problems


@pytest.mark.parametrize(
    "tamper",
    ["DELETE FROM audit_log WHERE seq > 4", "DELETE FROM audit_log", "UPDATE audit_log SET payload = 'edited' WHERE seq = 3"],
    ids=["A4-truncate-tail", "A6-delete-all", "A5-edit-and-rehash"],
)
def test_appends_after_tampering_do_not_move_the_anchor_past_it(tmp_path, tamper, caplog):
    """Issue 24, found by the hostile harness: the next append re-signed the anchor over the
    forged chain, so one sign-in after the edit made verify say intact again."""
    db = anchored_log(tmp_path / "appliance.db")
    db.conn.execute(tamper)
    if "UPDATE" in tamper:
        rehash_from(db.conn, 3)
    for n in range(8):  # past the anchor's seq (6) whatever the tampering left
        chain.append(db, "web-signed-in", {"n": n})
    assert json.loads((tmp_path / "appliance.db.audit-anchor").read_text())["seq"] == 6
    assert chain.verify_database(db), "the tampering no longer shows"
    assert "audit anchor kept at seq 6" in caplog.text


def test_the_anchor_is_keyed_and_cannot_be_moved_without_the_key(tmp_path):
    db = anchored_log(tmp_path / "appliance.db")
    key = tmp_path / ".audit-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    anchor_file = tmp_path / "appliance.db.audit-anchor"
    stored = json.loads(anchor_file.read_text())
    assert stored["seq"] == 6
    db.conn.execute("DELETE FROM audit_log WHERE seq > 4")
    forged = {**stored, "seq": 4, "hash": db.conn.execute("SELECT hash FROM audit_log WHERE seq = 4").fetchone()[0]}
    anchor_file.write_text(json.dumps(forged))
    [problem] = chain.verify_database(db)
    assert "does not verify against the device key" in problem.problem
    anchor_file.unlink()
    [problem] = chain.verify_database(db)
    assert "no audit anchor" in problem.problem


def test_the_anchor_moves_after_the_commit_and_not_with_a_rollback(tmp_path):
    db = anchored_log(tmp_path / "appliance.db", rows=2)
    anchor_file = tmp_path / "appliance.db.audit-anchor"
    with pytest.raises(RuntimeError), transaction(db.conn) as conn:
        chain.append_in(conn, "event", {"n": "rolled back"})
        raise RuntimeError
    assert json.loads(anchor_file.read_text())["seq"] == 2
    with transaction(db.conn) as conn:
        chain.append_in(conn, "event", {"n": 3})
        chain.append_in(conn, "event", {"n": 4})
        assert json.loads(anchor_file.read_text())["seq"] == 2
    assert json.loads(anchor_file.read_text())["seq"] == 4
    assert chain.verify_database(db) == []

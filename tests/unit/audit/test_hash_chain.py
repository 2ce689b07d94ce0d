from __future__ import annotations

from appliance.audit import chain
from appliance.db import MIGRATIONS, open_database


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

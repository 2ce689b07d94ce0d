"""The hub holds a report by its device and its id: another device cannot claim an id."""

from __future__ import annotations

import copy
import sqlite3

from tests.helpers.hub import make_report
from training.hub.service import Device, take_reports
from training.hub.store import MIGRATIONS, HubDatabase

HEAD = {"seq": 7, "hash": "ab" * 32}


def batch(report: dict) -> dict:
    return {"reports": [{"report": copy.deepcopy(report), "audit_head": HEAD}]}


def test_a_report_id_sent_first_by_another_device_does_not_squat_the_owners(tmp_path):
    """Issue 24, H10-report-id-squat. Before: box2's report under main's id was kept and
    main's own was rejected ("already used by another device")."""
    db = HubDatabase(str(tmp_path / "hub.db"))
    main, box2 = Device("main", "Site A", "all"), Device("box2", "Site B", "all")
    genuine = make_report()
    squatter = {**make_report(flagged=400), "report_id": genuine["report_id"]}
    assert [r["status"] for r in take_reports(db, box2, batch(squatter), 1.0)] == ["accepted"]
    assert [r["status"] for r in take_reports(db, main, batch(genuine), 2.0)] == ["accepted"]
    assert [r["status"] for r in take_reports(db, main, batch(genuine), 3.0)] == ["duplicate"]
    held = db.rows("SELECT device_id, flagged FROM report_models WHERE report_id = ? ORDER BY device_id",
                   (genuine["report_id"],))
    assert held == [("box2", 400), ("main", 12)]


def test_reports_held_before_the_migration_are_kept(tmp_path):
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (2)")
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("INSERT INTO reports VALUES ('r1', 'main', '2026-11-20', 1.0, 7, 'h', '{}')")
        conn.execute("INSERT INTO report_models VALUES ('r1', 'main', '2026-11-20', 'm', '1.0.0', 40, 12, 0, '{}')")
    db = HubDatabase(str(path))
    assert db.rows("SELECT report_id, device_id FROM reports") == [("r1", "main")]
    assert db.rows("SELECT report_id, series FROM report_models") == [("r1", 40)]

"""Hostile edits of the audit log by someone holding the database file but not the device
key: named by `appliance audit verify`, by the API and on the admin page; and a box whose
chain went behind what it told the hub is named by the hub."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from appliance.audit import chain
from appliance.db import open_database
from appliance.parts import Parts
from appliance.sync import report_queue
from appliance.sync.round import enrol, run_round
from scripts.harness import REPO
from tests.helpers.boxes import session_client
from tests.helpers.hostile import case
from tests.helpers.hostile_web import running_web
from tests.helpers.hub import box_settings, make_report

TAMPERING = {
    "A4-truncate-tail": "DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) - 2 FROM audit_log)",
    "A5-edit-and-rehash": "UPDATE audit_log SET payload = '{\"edited\": true}' WHERE seq = 3",
}


def rehash_from(conn: sqlite3.Connection, first: int) -> None:
    """What someone with the database but not the device key can do: recompute the chain."""
    prev = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (first - 1,)).fetchone()[0]
    rows = conn.execute("SELECT seq, at, kind, payload FROM audit_log WHERE seq >= ? ORDER BY seq", (first,)).fetchall()
    for seq, at, kind, payload in rows:
        digest = chain.row_hash(prev, seq, at, kind, payload)
        conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest


@pytest.fixture
def audited_web(tmp_path):
    """The web app over a data folder with a dozen audit rows (users, sign-ins, events)."""
    yield from running_web(tmp_path)


@case("A4-truncate-tail", "A5-edit-and-rehash")
def test_tampering_is_named_by_the_cli_and_the_admin_page(audited_web, case_id):
    db = open_database(audited_web.settings.db_path)
    for n in range(6):
        chain.append(db, "event", {"n": n})
    assert chain.verify_database(db) == []
    with sqlite3.connect(audited_web.settings.db_path, isolation_level=None) as raw:
        raw.execute(TAMPERING[case_id])
        if case_id == "A5-edit-and-rehash":
            rehash_from(raw, 3)
    cli = subprocess.run([sys.executable, "-m", "appliance.cli", "audit", "verify"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={"APPLIANCE_DATA_DIR": str(audited_web.settings.data_dir),
                                                      "PATH": "/usr/bin:/bin"})
    assert cli.returncode == 1 and "intact" not in cli.stdout.lower(), cli.stdout
    client, _ = session_client(audited_web, "bio")
    try:
        page = client.get("/admin/audit", params={"verify": 1})
        assert "The chain is broken." in page.text and "Chain intact" not in page.text
        verified = client.get("/api/audit/verify").json()
        assert verified["intact"] is False and verified["problems"]
    finally:
        client.close()


@case("A6-delete-all")
def test_the_hub_names_a_box_whose_chain_went_behind_its_anchor(hub, tmp_path, case_id):
    """Each report carries the box's audit head; the hub keeps it. A box whose log was
    emptied afterwards (its anchor file with it) reports a head behind the one the hub
    holds: the hub names the problem in its check-in answer (and keeps it for the fleet page)."""
    box = box_settings(tmp_path / "box")
    enrol(box, hub.url, hub.token(site="box"))
    conn = open_database(box.db_path).conn
    assert report_queue.enqueue_report(conn, make_report(day="2026-11-20"))
    assert run_round(box, Parts(box).registry(), sleep=lambda _: None).pushed == 1
    conn.execute("DELETE FROM audit_log")
    for anchor in box.data_dir.glob("*.audit-anchor"):
        anchor.unlink()
    assert report_queue.enqueue_report(conn, make_report(day="2026-11-21"))
    result = run_round(box, Parts(box).registry(), sleep=lambda _: None)
    assert result.audit and "the hub's anchor at seq" in result.audit, result  # cut short or deleted

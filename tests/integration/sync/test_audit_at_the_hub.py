"""The hub holds an anchor of each box's audit chain and compares the chain with it at
every check-in (hostile cases A4-truncate-tail, A5-edit-and-rehash, A6-delete-all, seen
from the hub: the box's own anchor can be rewritten by whoever holds the whole box).

Real parts: the box's SQLite database and audit log, the hub's app and SQLite database,
signed requests from :class:`appliance.sync.client.HubClient` over FastAPI's test client
(an httpx client), and the box's own check-in code.
"""

from __future__ import annotations

import base64
import html

import pytest
from fastapi.testclient import TestClient

from appliance.audit import chain
from appliance.db import open_database, transaction
from appliance.sync import signing
from appliance.sync.client import HubClient
from appliance.sync.identity import load_or_create_key, public_bytes
from appliance.sync.round import check_in
from training.hub import fleet
from training.hub.app import create_app
from training.hub.repository import Repository
from tests.helpers.hub import make_report
from training.hub.service import Device, create_token, enrol, take_reports
from training.hub.store import HubDatabase

CHECKIN = {
    "appliance_version": "0.1.0",
    "models": [],
    "metadata_refreshed_at": None,
    "release_error": None,
    "drift_alerts": [],
}


@pytest.fixture
def setup(tmp_path):
    """An enrolled box with 20 audit events, its first check-in done (the hub's anchor at 20)."""
    hub_db = HubDatabase(str(tmp_path / "hub.db"))
    app = create_app(hub_db, Repository(tmp_path / "hub"))
    key = load_or_create_key(tmp_path / "box")
    token = create_token(hub_db, "Site A", "all", 3600, 1.0)
    device_id, _ = enrol(
        hub_db,
        {
            "token": token,
            "public_key": base64.b64encode(public_bytes(key)).decode(),
            "signature": signing.sign(key, signing.enrolment_string(token, public_bytes(key))),
        },
        1.0,
    )
    box = open_database(tmp_path / "box" / "appliance.db")
    for n in range(20):
        chain.append(box, "test-event", {"n": n})
    client = HubClient(TestClient(app), device_id, key)
    assert check_in(client, box.conn, CHECKIN)["audit"] == "consistent"
    assert hub_db.one("SELECT audit_seq FROM devices")[0] == _head(box)[0]
    yield client, box, hub_db, device_id
    hub_db.close()


def _head(box) -> tuple[int, str]:
    return box.conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()


def _rehash(box) -> None:
    """Recompute every row's prev_hash and hash: the chain verifies again on its own."""
    prev = chain.GENESIS
    with transaction(box.conn) as conn:
        for seq, at, kind, payload in conn.execute(
            "SELECT seq, at, kind, payload FROM audit_log ORDER BY seq"
        ).fetchall():
            digest = chain.row_hash(prev, seq, at, kind, payload)
            conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            prev = digest


def test_a_growing_intact_chain_stays_consistent_and_the_anchor_follows_its_head(setup):
    client, box, hub_db, _ = setup
    for n in range(5):
        chain.append(box, "test-event", {"n": n})
    assert check_in(client, box.conn, CHECKIN)["audit"] == "consistent"
    assert hub_db.one("SELECT audit_seq, audit_hash, audit_problem FROM devices") == (*_head(box), None)


@pytest.mark.parametrize(
    ("attack", "grown", "words"),
    [
        ("truncate-tail", 0, "ends at seq 15, before the hub's anchor at seq 20 (cut short)"),
        ("truncate-tail", 30, "differs from the hub's anchor at seq 20 (rewritten and re-hashed)"),
        ("edit-and-rehash", 0, "differs from the hub's anchor at seq 20 (rewritten and re-hashed)"),
        ("edit-and-rehash", 30, "differs from the hub's anchor at seq 20 (rewritten and re-hashed)"),
        ("delete-all", 0, "audit log is empty, yet the hub holds its anchor at seq 20"),
        ("delete-all", 30, "differs from the hub's anchor at seq 20 (rewritten and re-hashed)"),
    ],
)
def test_the_hub_names_a_chain_cut_emptied_or_rewritten_and_keeps_saying_so(setup, attack, grown, words):
    """Before: the hub stored each report's chain head and never looked at it again."""
    client, box, hub_db, _ = setup
    anchor = hub_db.one("SELECT audit_seq, audit_hash FROM devices")
    if attack == "truncate-tail":
        with transaction(box.conn) as conn:
            conn.execute("DELETE FROM audit_log WHERE seq > 15")
    elif attack == "edit-and-rehash":
        with transaction(box.conn) as conn:
            conn.execute("UPDATE audit_log SET payload = 'edited' WHERE seq = 7")
        _rehash(box)
        assert chain.verify_chain(box.conn.execute(chain.AUDIT_ROWS)) == []  # the chain alone says intact
    else:
        with transaction(box.conn) as conn:
            conn.execute("DELETE FROM audit_log")
    for n in range(grown):  # the log may grow on past the anchor again
        chain.append(box, "test-event", {"n": n})
    first = check_in(client, box.conn, CHECKIN)["audit"]
    assert words in first
    assert check_in(client, box.conn, CHECKIN)["audit"] == first  # kept: showing it again does not clear it
    assert hub_db.one("SELECT audit_seq, audit_hash FROM devices") == anchor  # the anchor stops moving
    page = fleet.render(fleet.collect(hub_db, 2.0))
    assert f"audit log: {first}" in html.unescape(page)


def test_a_box_that_does_not_show_the_anchor_row_is_named(setup):
    client, box, hub_db, _ = setup
    seq = hub_db.one("SELECT audit_seq FROM devices")[0]
    answer = client.post(
        "/v1/checkin",
        {**CHECKIN, "audit": {"head": {"seq": seq + 1, "hash": "a" * 64}, "at": {"seq": seq - 1, "hash": "b" * 64}}},
    )
    assert answer["audit"] == f"the box did not show its audit chain at seq {seq}, the anchor the hub holds"


def test_evidence_that_is_not_what_a_box_sends_is_a_400_naming_the_field(setup):
    client, *_ = setup
    with pytest.raises(Exception, match=r"audit.head.hash: must be 64 lowercase hex digits"):
        client.post("/v1/checkin", {**CHECKIN, "audit": {"head": {"seq": 3, "hash": "x"}, "at": None}})


def test_a_report_naming_the_anchors_seq_with_another_hash_is_a_problem(setup):
    _, _, hub_db, device_id = setup
    seq = hub_db.one("SELECT audit_seq FROM devices")[0]
    item = {"report": make_report(), "audit_head": {"seq": seq, "hash": "c" * 64}}
    assert take_reports(hub_db, Device(device_id, "Site A", "all"), {"reports": [item]}, 2.0)[0]["status"] == "accepted"
    assert fleet.collect(hub_db, 2.0)[0].audit_problem == (
        f"a report names seq {seq} with another hash than the hub's anchor (rewritten and re-hashed)"
    )


def test_an_operator_clears_an_explained_problem_and_the_next_check_in_anchors_again(setup, tmp_path, capsys):
    """A box restored from a backup shows a chain cut short: the hub names it and keeps
    naming it until an operator, having checked the restore, clears it with a reason. The
    next check-in anchors the chain at the box's head; the fleet page keeps what was cleared."""
    from training.hub.__main__ import main as hub_cli

    client, box, hub_db, device_id = setup
    with transaction(box.conn) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq > 15")  # the backup held rows 1-15
    problem = check_in(client, box.conn, CHECKIN)["audit"]
    assert "cut short" in problem
    data_dir = ["--data-dir", str(tmp_path / "hub-cli"), "--database-url", str(tmp_path / "hub.db")]
    with pytest.raises(SystemExit, match="2"):  # a reason is required
        hub_cli(["devices", "clear-audit", device_id, *data_dir])
    assert "clear-audit DEVICE_ID --reason TEXT" in capsys.readouterr().err
    assert hub_cli(["devices", "clear-audit", "no-such-device", "--reason", "x", *data_dir]) == 2
    assert "no device no-such-device" in capsys.readouterr().err
    assert hub_cli(["devices", "clear-audit", device_id, "--reason", "restored from the 1 Dec backup", *data_dir]) == 0
    assert f"cleared the audit problem of {device_id} ({problem})" in capsys.readouterr().out
    assert hub_cli(["devices", "clear-audit", device_id, "--reason", "again", *data_dir]) == 2
    assert "has no audit problem to clear" in capsys.readouterr().err

    chain.append(box, "restore", {"file": "b.db"})
    assert check_in(client, box.conn, CHECKIN)["audit"] == "consistent"
    assert hub_db.one("SELECT audit_seq, audit_hash, audit_problem FROM devices") == (*_head(box), None)
    page = html.unescape(fleet.render(fleet.collect(hub_db, 2.0)))
    assert "audit log:" not in page
    assert f"restored from the 1 Dec backup (was: {problem})" in page
    with transaction(box.conn) as conn:  # and a cut after the new anchor is named again
        conn.execute("DELETE FROM audit_log WHERE seq > 10")
    assert "cut short" in check_in(client, box.conn, CHECKIN)["audit"]

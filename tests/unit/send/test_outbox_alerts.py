"""A flagged result given up on raises an alert: an audit event and a line in the status."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.audit import chain as audit_log
from appliance.db import open_database, transaction
from appliance.send.outbox import Outbox, OutgoingObject, enqueue_in
from appliance.status import collect_status

PACS = "PACS@127.0.0.1:104"


def test_a_dead_flagged_result_is_audited_and_listed_and_others_are_not(tmp_path: Path):
    db = open_database(tmp_path / "appliance.db")
    outbox = Outbox(db)
    with transaction(db.conn) as conn:
        [flagged] = enqueue_in(conn, OutgoingObject(tmp_path / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.1",
                                                    "2.25.9", alert=True), [PACS], 100.0)
        [plain] = enqueue_in(conn, OutgoingObject(tmp_path / "sr2.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.2",
                                                  "2.25.9"), [PACS], 100.0)
    outbox.mark_failed(flagged, 0xA700, "out of resources", retry_at=150.0, now=101.0)  # still pending
    assert outbox.alerts() == [] and collect_status(db)["alerts"] == []
    outbox.mark_failed(flagged, 0xA700, "out of resources", retry_at=None, now=160.0)
    outbox.mark_failed(plain, 0xA700, "out of resources", retry_at=None, now=160.0)

    assert [item.id for item in outbox.alerts()] == [flagged]
    [alert] = collect_status(db)["alerts"]
    assert alert == {"kind": "flagged-result-dead-lettered", "outbox_id": flagged, "sop_instance_uid": "2.25.1",
                     "study_instance_uid": "2.25.9", "destination": PACS, "error": "out of resources"}
    events = [(kind, json.loads(payload)) for kind, payload in
              db.conn.execute("SELECT kind, payload FROM audit_log ORDER BY seq")]
    assert [(k, p["sop_instance_uid"], p["status"]) for k, p in events] == [
        ("alert-result-dead-lettered", "2.25.1", 0xA700)]
    assert audit_log.verify_database(db) == []
    outbox.retry(flagged, "web:bio", now=200.0)  # a biomed user retried it: no longer an alert
    assert collect_status(db)["alerts"] == []

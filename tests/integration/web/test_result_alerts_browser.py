"""What the appliance says about its results once they leave the worker: a flagged result
that PACS never got raises an alert on the admin pages until a biomed user retries it, and
a re-triaged series shows only its current result in the API and in the status."""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.parts import Parts
from appliance.receive.index import IngestIndex
from appliance.send.outbox import Outbox
from appliance.send.sender import Sender
from appliance.status import collect_status
from tests.helpers.boxes import arrived, queue_and_work, session_client, sign_in
from tests.helpers.series import ct_dataset

DESTINATION = "PACS@127.0.0.1:9"  # the box's destination: nothing listens there
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _audit(box, kind: str) -> list[dict]:
    return [json.loads(p) for (p,) in box.db().conn.execute(
        "SELECT payload FROM audit_log WHERE kind = ? ORDER BY seq", (kind,))]


def test_a_dead_lettered_flagged_result_is_an_alert_on_the_admin_pages_until_retried(box, page):
    study = box.studies["flagged"]
    [(item_id, sop, path)] = box.db().conn.execute(
        "SELECT id, sop_instance_uid, path FROM outbox WHERE study_instance_uid = ? AND alert = 1 "
        "AND sop_class_uid LIKE ?", (study, SR_PREFIX + "%")).fetchall()
    sign_in(page, box, "bio")
    assert page.locator("#result-alerts").count() == 0  # pending is not given up on

    # The flagged SR's file is unreadable when the real sender gets to it: it is dead at once.
    hidden = Path(path).with_suffix(".away")
    Path(path).rename(hidden)
    Sender(box.settings, box.db()).send_due_once(time.time())
    hidden.rename(path)
    assert Outbox(box.db()).get(item_id).state == "dead"
    assert [(a["outbox_id"], a["sop_instance_uid"]) for a in _audit(box, "alert-result-dead-lettered")] == [
        (item_id, sop)]
    assert [a["outbox_id"] for a in collect_status(box.db())["alerts"]] == [item_id]

    page.goto(f"{box.url}/admin")
    alert = page.get_by_role("alert")
    text = alert.inner_text()
    assert "1 flagged result object never reached PACS" in text
    assert f"Object {item_id}, SR of study {study} to {DESTINATION}: cannot read result file" in text
    assert "tell the reading room" in text
    page.goto(f"{box.url}/admin/dicom")
    assert f"Object {item_id}, SR of study {study}" in page.locator("#result-alerts").inner_text()

    page.get_by_role("button", name=f"Retry object {item_id}").click()
    page.wait_for_url("**/admin/dicom?ok=*")
    assert page.locator("#result-alerts").count() == 0
    page.goto(f"{box.url}/admin")
    assert page.locator("#result-alerts").count() == 0
    assert Outbox(box.db()).get(item_id).state == "pending" and collect_status(box.db())["alerts"] == []


def _late_instance(box, study: str, series: str) -> None:
    """One more slice of ``series`` arrives through the ingest index and the worker runs."""
    [spool] = {Path(p).parent for (p,) in box.db().conn.execute(
        "SELECT path FROM instances WHERE series_instance_uid = ?", (series,))}
    count = box.db().conn.execute("SELECT COUNT(*) FROM instances WHERE series_instance_uid = ?",
                                  (series,)).fetchone()[0]
    ds = ct_dataset(study, series, count, size=64)
    path = spool / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    index = IngestIndex(box.db())
    index.record(arrived(ds, path, "CT_1", "assoc-late", "CT HEAD"))
    queue_and_work(index, Parts(box.settings).worker())


def test_a_re_triaged_series_shows_only_its_current_result_in_the_api_and_the_status(box):
    study = box.studies["not-flagged"]
    [series] = [s for (s,) in box.db().conn.execute(
        "SELECT series_instance_uid FROM series WHERE study_instance_uid = ?", (study,))]
    _late_instance(box, study, series)
    rows = box.db().conn.execute(
        "SELECT generation, superseded, superseded_by_sr, sr_instance_uid FROM inference_results "
        "WHERE series_instance_uid = ? AND role = 'active' ORDER BY generation", (series,)).fetchall()
    assert [(g, s) for g, s, _, _ in rows] == [(1, 1), (2, 0)]
    earlier, current = rows[0][3], rows[1][3]
    assert rows[0][2] == current and earlier != current

    client, _ = session_client(box, "rad")
    try:
        detail = client.get(f"/api/studies/{study}").json()
        listed = client.get("/api/studies", params={"page_size": 500}).json()
    finally:
        client.close()
    assert [(s["series_instance_uid"], s["sr_instance_uid"]) for s in detail["series"]] == [(series, current)]
    assert detail["state"] == "not-flagged" and earlier not in json.dumps(detail)
    assert [s["state"] for s in listed["studies"] if s["study_instance_uid"] == study] == ["not-flagged"]
    entries = [e for e in collect_status(box.db())["series"] if e["series_instance_uid"] == series]
    assert [(e["state"], e["result"]["sr_instance_uid"]) for e in entries] == [("triaged", current)]

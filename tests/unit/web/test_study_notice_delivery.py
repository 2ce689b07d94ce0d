"""Issue 26 review: an analysed series' study page said where its result went, a
not-analysed one said nothing of whether its "not analysed" notice reached PACS. The
notice is queued in the same outbox, one row per destination; the page reads it the same way."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.states import SeriesState, StudyState
from appliance.web import accounts
from appliance.web.app import create_app

STUDY = "1.2.826.0.1.3680043.8.498.7"
PACS, ARCHIVE = "PACS@10.0.0.5:104", "ARCHIVE@10.0.0.6:104"


def _box(tmp_path, monkeypatch, destinations: str):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APPLIANCE_DICOM_DESTINATIONS", destinations)
    settings = load_settings()
    db = open_database(settings.db_path)
    db.conn.execute(
        "INSERT INTO web_studies (study_instance_uid, state, flag_rank, priority, modalities, models, series_count, "
        "received_at, first_series_uid, patient_name, patient_id, updated_at) "
        "VALUES (?, ?, 0, 0, 'CT', '', 3, 0, '1.2.3.1', 'Some^One', 'P1', 0)",
        (STUDY, StudyState.NOT_ANALYSED),
    )
    token = accounts.create_token(db.conn, "radiologist", "viewer", "test")
    client = TestClient(create_app(Parts(settings)), base_url="http://127.0.0.1")
    client.headers["Authorization"] = f"Bearer {token}"
    return db, client


def _series(db, uid: str, state: str, reason: str, at: float, generation: int = 1) -> None:
    db.conn.execute(
        "INSERT INTO series (series_instance_uid, study_instance_uid, modality, state, reason, generation, "
        "first_received_at, last_received_at, updated_at) VALUES (?, ?, 'CT', ?, ?, ?, ?, ?, ?)",
        (uid, STUDY, state, reason, generation, at, at, at),
    )


def _notice(db, job_id: int, series: str, sop: str, generation: int = 1, queued: dict | None = None) -> None:
    db.conn.execute(
        "INSERT INTO notices (job_id, series_instance_uid, study_instance_uid, generation, reason_code, reason, "
        "sr_instance_uid, audit_seq, created_at) VALUES (?, ?, ?, ?, 'x', 'r', ?, 0, 0)",
        (job_id, series, STUDY, generation, sop),
    )
    for destination, state in (queued or {}).items():
        db.conn.execute(
            "INSERT INTO outbox (path, sop_class_uid, sop_instance_uid, study_instance_uid, destination, state, "
            "next_attempt_at, created_at, updated_at) VALUES ('/nowhere.dcm', '1.2.840.10008.5.1.4.1.1.88.34', "
            "?, ?, ?, ?, 0, 0, 0)",
            (sop, STUDY, destination, state),
        )


def _notice_lines(client) -> list[str]:
    page = client.get(f"/studies/{STUDY}")
    assert page.status_code == 200
    found = re.findall(r'<p class="delivery notice-delivery[^"]*">(.*?)</p>', page.text, re.S)
    return [" ".join(re.sub(r"<br>", " | ", re.sub(r"<(?!br>)[^>]+>", "", p)).split()) for p in found]


def test_each_not_analysed_series_says_where_its_notice_went(tmp_path, monkeypatch):
    db, client = _box(tmp_path, monkeypatch, f"{PACS},{ARCHIVE}")
    _series(db, "1.2.3.1", SeriesState.NOT_ELIGIBLE, "body part CHEST; this model reads HEAD", 1)
    _notice(db, 1, "1.2.3.1", "1.2.3.91", queued={PACS: "sent", ARCHIVE: "pending"})
    _series(db, "1.2.3.2", SeriesState.FAILED, "decode failed", 2)
    _notice(db, 2, "1.2.3.2", "1.2.3.92", queued={PACS: "dead"})
    _series(db, "1.2.3.3", SeriesState.NOT_ELIGIBLE, "no routing rule takes modality MR", 3)  # claimed by none
    _series(db, "1.2.3.4", SeriesState.NOT_ELIGIBLE, "too few slices", 4, generation=2)
    _notice(db, 4, "1.2.3.4", "1.2.3.94", generation=1, queued={PACS: "sent"})  # an earlier generation's
    assert _notice_lines(client) == [
        f"“Not analysed” notice: ◐ Waiting to be sent to {ARCHIVE} | ✓ Received by {PACS}",
        f"“Not analysed” notice: ✕ Not delivered to {PACS}: given up (see the DICOM page)",
        "No “not analysed” notice was made for this series: the appliance makes one only for a series a "
        "routing rule takes.",
        "No “not analysed” notice was made for this series: the appliance makes one only for a series a "
        "routing rule takes.",
    ]


def test_a_notice_on_a_box_without_a_destination_says_it_was_not_sent(tmp_path, monkeypatch):
    db, client = _box(tmp_path, monkeypatch, "")
    _series(db, "1.2.3.1", SeriesState.NOT_ELIGIBLE, "too few slices", 1)
    _notice(db, 1, "1.2.3.1", "1.2.3.91")
    assert _notice_lines(client) == [
        "“Not analysed” notice: Not sent to PACS: no DICOM destination is configured. The notice stays on the "
        "appliance."
    ]

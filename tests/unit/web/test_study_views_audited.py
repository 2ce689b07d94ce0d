"""Every opening of a study is audited (issue 23): the study page and the JSON API record
``study-viewed`` with who and which study, and nothing of the patient."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from appliance.audit.chain import verify_database
from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.states import StudyState
from appliance.web import accounts
from appliance.web.app import create_app

STUDY = "1.2.826.0.1.3680043.8.498.1"


def test_the_study_page_and_the_api_audit_each_view(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    db = open_database(settings.db_path)
    db.conn.execute(
        "INSERT INTO web_studies (study_instance_uid, state, flag_rank, priority, modalities, models, series_count, "
        "received_at, first_series_uid, patient_name, patient_id, updated_at) "
        "VALUES (?, ?, 0, 0, 'CT', '', 0, 0, '1.2.3', 'Secret^Patient', 'PID-SECRET', 0)",
        (STUDY, StudyState.PENDING),
    )
    token = accounts.create_token(db.conn, "radiologist", "viewer-station", "test")
    client = TestClient(create_app(Parts(settings)), base_url="http://127.0.0.1")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/studies/{STUDY}", headers=headers).status_code == 200
    assert client.get(f"/api/studies/{STUDY}", headers=headers).status_code == 200
    assert client.get("/api/studies/1.2.3.404", headers=headers).status_code == 404  # no study: nothing viewed
    rows = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'study-viewed' ORDER BY seq").fetchall()
    views = [json.loads(payload) for (payload,) in rows]
    assert views == [
        {"actor": "token:viewer-station", "study_instance_uid": STUDY, "via": "page"},
        {"actor": "token:viewer-station", "study_instance_uid": STUDY, "via": "api"},
    ]
    assert "Secret" not in str(rows) and "PID-SECRET" not in str(rows)
    assert verify_database(db) == []

"""The compliance report as a download for biomed and admin users (issue 23): the same
report as ``appliance report compliance``, its download audited, the period checked."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.db import open_database
from appliance.parts import Parts
from appliance.web import accounts
from appliance.web.app import create_app


def test_biomed_downloads_the_report_and_the_download_is_audited(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    db = open_database(settings.db_path)
    biomed = accounts.create_token(db.conn, "biomed", "qa-office", "test")
    radiologist = accounts.create_token(db.conn, "radiologist", "reading-room", "test")
    client = TestClient(create_app(Parts(settings)), base_url="http://127.0.0.1")

    def get(token: str, query: str):
        return client.get(f"/admin/compliance?{query}", headers={"Authorization": f"Bearer {token}"})

    answer = get(biomed, "from=2026-11-01&to=2026-11-30")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="compliance-2026-11-01-2026-11-30.json"'
    report = json.loads(answer.text)
    assert report["period_start"].startswith("2026-11-01") and report["period_end"].startswith("2026-12-01")
    assert report["audit"]["chain_verified"] is True
    text = get(biomed, "from=2026-11-01&to=2026-11-30&format=text")
    assert text.status_code == 200 and "Compliance report, 2026-11-01" in text.text
    assert get(biomed, "from=2026-11-30&to=2026-11-01").status_code == 400
    assert get(biomed, "from=yesterday&to=2026-11-01").status_code == 400
    assert get(radiologist, "from=2026-11-01&to=2026-11-30").status_code == 403
    exported = db.conn.execute("SELECT payload FROM audit_log WHERE kind = 'web-compliance-exported'").fetchall()
    assert [json.loads(p)["format"] for (p,) in exported] == ["json", "text"]
    assert json.loads(exported[0][0])["actor"] == "token:qa-office"

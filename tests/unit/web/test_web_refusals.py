"""Anonymous refusals are audited by aggregate, not one durable row each."""

from __future__ import annotations

from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.web.app import create_app
from appliance.web.refusals import RefusalTally


def test_a_kind_is_written_once_a_window_carrying_what_was_held_back():
    now = [0.0]
    tally = RefusalTally(window_s=60.0, clock=lambda: now[0])
    assert tally.admit("10.0.0.1", "no csrf") == 0
    assert [tally.admit("10.0.0.1", "no csrf") for _ in range(5)] == [None] * 5
    assert tally.admit("10.0.0.2", "no csrf") == 0  # another address is its own kind
    now[0] = 61.0
    assert tally.admit("10.0.0.1", "no csrf") == 5


def test_a_flood_of_anonymous_sign_ins_without_csrf_writes_one_row(tmp_path, monkeypatch):
    """Issue 24, S3-audit-amplification. Before: 12,660 anonymous requests wrote 12,710
    audit rows and slowed ingest six-fold."""
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    parts = Parts(load_settings())
    client = TestClient(create_app(parts), base_url="http://127.0.0.1")
    for _ in range(50):
        assert client.post("/login", data={"name": "x", "password": "y"}).status_code == 403
    rows = parts.database().conn.execute("SELECT payload FROM audit_log WHERE kind = 'web-refused'").fetchall()
    assert len(rows) == 1 and '"held_back":0' in rows[0][0]

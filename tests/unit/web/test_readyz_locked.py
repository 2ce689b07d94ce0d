"""/readyz answers within its own deadline, even while another process holds the database."""

from __future__ import annotations

import sqlite3
import time

from appliance.config import load_settings
from appliance.db import open_database
from appliance.web.routes.health import readiness


def test_a_locked_database_is_named_promptly(tmp_path, monkeypatch):
    """Issue 24, R5b-readyz-locked. Before: /readyz waited out the connection's 30 s
    busy timeout (an HTML error page, or 200 once the lock went)."""
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    settings = load_settings()
    conn = open_database(tmp_path / "appliance.db").conn
    holder = sqlite3.connect(tmp_path / "appliance.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    checks = readiness(conn, settings, time.time())
    assert time.monotonic() - started < 10
    assert checks["database"] == "not writable within 2 s: database is locked"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    holder.execute("ROLLBACK")
    assert readiness(conn, settings, time.time())["database"] is None

"""The users page shows a new token only in the answer that created it."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.web import accounts, sessions
from appliance.web.app import create_app
from appliance.web.security import SESSION_COOKIE

PASSWORD = "twelve chars or more"


def test_a_token_in_the_url_is_not_shown_as_a_new_token(tmp_path, monkeypatch):
    """Issue 24, W12-reflected. Before: /admin/users?token=... presented any text as
    'New token (shown once)'."""
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    parts = Parts(load_settings())
    conn = parts.database().conn
    accounts.add_user(conn, "boss", "admin", PASSWORD, "test")
    session, _ = sessions.sign_in(conn, parts.settings.web, "boss", PASSWORD, "127.0.0.1", time.time())
    client = TestClient(create_app(parts), base_url="http://127.0.0.1", cookies={SESSION_COOKIE: session})
    page = client.get("/admin/users", params={"token": "tap_call-0800-FAKE"})
    assert page.status_code == 200
    assert "tap_call-0800-FAKE" not in page.text and "New token" not in page.text


def test_the_users_page_says_its_times_are_utc_and_shows_them_in_utc(tmp_path, monkeypatch):
    """Issue 26 review: session times showed with no zone; the audit page says "At (UTC)".
    On a box whose local zone is not UTC the page still shows UTC, as its headings say."""
    import datetime as dt
    import re

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
        parts = Parts(load_settings())
        conn = parts.database().conn
        accounts.add_user(conn, "boss", "admin", PASSWORD, "test")
        signed_in = time.time() - 120
        session, _ = sessions.sign_in(conn, parts.settings.web, "boss", PASSWORD, "127.0.0.1", signed_in)
        accounts.create_token(conn, "biomed", "prometheus", "test")
        (token_id,) = conn.execute("SELECT id FROM web_tokens").fetchone()
        accounts.revoke_token(conn, token_id, "test")
        client = TestClient(create_app(parts), base_url="http://127.0.0.1", cookies={SESSION_COOKIE: session})
        page = client.get("/admin/users").text
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    headings = re.findall(r'<th scope="col">([^<]*)</th>', page)
    assert {"Created (UTC)", "Since (UTC)", "Last seen (UTC)"} <= set(headings)
    assert not {"Created", "Since", "Last seen"} & set(headings)
    utc = dt.datetime.fromtimestamp(signed_in, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f"<td>{utc}</td>" in page  # the session's start, in UTC, not New York's time
    assert re.search(r"revoked \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)


def test_a_local_time_on_any_page_names_its_zone(monkeypatch):
    """Issue 26 review: study, DICOM and worklist times were local with no zone; a reader
    could not tell them from the UTC the audit and users pages show."""
    from appliance.web.filters import when

    moment = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert when(moment) == "2026-11-29 19:53:20 EST"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert when(moment) == "2026-11-30 00:53:20 UTC"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert when(None) == "—"

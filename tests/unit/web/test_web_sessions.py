"""Sessions and sign-in throttling on a real SQLite file, with an injected clock."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.config import WebSettings
from appliance.db import open_database
from appliance.errors import AccessError, LoginRefused
from appliance.web import accounts, sessions

PASSWORD = "twelve chars or more"


@pytest.fixture
def conn(tmp_path):
    conn = open_database(tmp_path / "appliance.db").conn
    accounts.add_user(conn, "rad", "radiologist", PASSWORD, "test")
    return conn


def test_a_session_ends_after_the_idle_timeout_and_after_the_absolute_one(conn):
    settings = WebSettings(session_idle_minutes=30, session_absolute_hours=12)
    token, _ = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=1000.0)
    assert sessions.session_for(conn, settings, token, now=1000.0 + 29 * 60) is not None
    assert sessions.session_for(conn, settings, token, now=1000.0 + 29 * 60 + 31 * 60) is None  # idle
    token, _ = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=0.0)
    t = 0.0
    while t < 12 * 3600 - 20 * 60:  # used every 20 minutes: never idle
        t += 20 * 60
        assert sessions.session_for(conn, settings, token, now=t) is not None
    assert sessions.session_for(conn, settings, token, now=12 * 3600 + 1) is None  # absolute
    ended = conn.execute("SELECT COUNT(*) FROM web_sessions WHERE end_reason = 'timed out'").fetchone()[0]
    assert ended == 2


def test_only_the_hash_of_a_session_id_is_stored_and_disabling_ends_it(conn):
    settings = WebSettings()
    token, session = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=0.0)
    assert conn.execute("SELECT COUNT(*) FROM web_sessions WHERE token_sha256 = ?", (token,)).fetchone()[0] == 0
    accounts.set_disabled(conn, "rad", True, "test")
    assert sessions.session_for(conn, settings, token, now=1.0) is None
    with pytest.raises(LoginRefused):
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=2.0)


def test_a_password_reset_or_a_disable_ends_every_session_for_good(conn):
    """Issue 24, W17-session-after-reset. Before: the old session answered 200 after a
    password reset, and again after a disable and re-enable."""
    settings = WebSettings()
    token, _ = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=0.0)
    accounts.reset_password(conn, "rad", "another long password", "admin")
    assert sessions.session_for(conn, settings, token, now=1.0) is None
    token, _ = sessions.sign_in(conn, settings, "rad", "another long password", "10.0.0.1", now=2.0)
    assert sessions.session_for(conn, settings, token, now=3.0) is not None
    accounts.set_disabled(conn, "rad", True, "admin")
    accounts.set_disabled(conn, "rad", False, "admin")
    assert sessions.session_for(conn, settings, token, now=4.0) is None
    assert sessions.live_sessions(conn, settings, now=5.0) == []
    reasons = conn.execute("SELECT end_reason FROM web_sessions ORDER BY created_at").fetchall()
    assert reasons == [("password reset or user disabled",)] * 2
    token, _ = sessions.sign_in(conn, settings, "rad", "another long password", "10.0.0.1", now=6.0)
    assert sessions.session_for(conn, settings, token, now=7.0) is not None


def test_sign_in_is_throttled_per_user_and_per_address(conn):
    settings = WebSettings(login_failures_per_user=3, login_failures_per_address=5, login_lockout_minutes=15)
    for i in range(3):
        with pytest.raises(LoginRefused, match="wrong"):
            sessions.sign_in(conn, settings, "rad", "not the password", "10.0.0.1", now=float(i))
    with pytest.raises(LoginRefused, match="too many"):  # even with the right password
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.2", now=10.0)
    assert sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.2", now=16 * 60.0)[0]
    for i in range(5):
        with pytest.raises(LoginRefused):
            sessions.sign_in(conn, settings, f"guess{i}", "x" * 12, "10.9.9.9", now=2000.0 + i)
    with pytest.raises(LoginRefused, match="too many"):
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.9.9.9", now=2010.0)
    kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_log")]
    assert kinds.count("web-login-failed") == 8 and kinds.count("web-login-throttled") == 2


def test_users_and_tokens_are_checked(conn):
    with pytest.raises(AccessError, match="already exists"):
        accounts.add_user(conn, "rad", "radiologist", PASSWORD, "test")
    with pytest.raises(AccessError, match="role 'chief'"):
        accounts.add_user(conn, "chief", "chief", PASSWORD, "test")
    with pytest.raises(AccessError, match="user name"):
        accounts.add_user(conn, "<b>", "admin", PASSWORD, "test")
    token = accounts.create_token(conn, "biomed", "scraper", "test")
    holder = accounts.token_holder(conn, token)
    assert holder is not None and holder.role == "biomed"
    accounts.revoke_token(conn, holder.id, "test")
    assert accounts.token_holder(conn, token) is None


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(tmp_path, monkeypatch):
    """Issue 24, W3-throttle-race. Before: 40 concurrent wrong sign-ins for one user had
    30 passwords checked against a limit of 5 (the count and the record were apart)."""
    path = tmp_path / "appliance.db"
    accounts.add_user(open_database(path).conn, "rad", "radiologist", PASSWORD, "test")
    settings = WebSettings(login_failures_per_user=5, login_failures_per_address=100)
    checked = []
    authenticate = accounts.authenticate

    def slow_authenticate(conn, name, password):
        checked.append(name)
        time.sleep(0.05)
        return authenticate(conn, name, password)

    monkeypatch.setattr(accounts, "authenticate", slow_authenticate)

    def guess(i: int) -> str:
        conn = open_database(path).conn
        try:
            sessions.sign_in(conn, settings, "rad", f"wrong guess {i}", f"10.0.0.{i}", now=100.0)
        except LoginRefused as exc:
            return "throttled" if "too many" in str(exc) else "wrong"
        return "signed in"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(guess, range(40)))
    assert len(checked) <= 5 and outcomes.count("wrong") == len(checked)
    assert outcomes.count("throttled") == 40 - len(checked)


def _signed_in_once(conn, settings, name: str, now: float) -> str:
    """Sign in as the login route does and return the device cookie the browser got."""
    sessions.sign_in(conn, settings, name, PASSWORD, "10.0.0.9", now)
    device = sessions.remember_device(conn, name, None, now)
    assert device is not None and sessions.remember_device(conn, name, device, now) is None  # kept, not renewed
    return device


def test_guesses_from_elsewhere_do_not_lock_a_user_out_of_the_browser_they_signed_in_from(conn):
    """Issue 24, W2/W4. Before: five wrong passwords for a name, from anywhere, locked that
    user out everywhere for the lockout window."""
    settings = WebSettings(login_failures_per_user=5)
    device = _signed_in_once(conn, settings, "rad", now=0.0)
    for n in range(5):
        with pytest.raises(LoginRefused, match="wrong"):
            sessions.sign_in(conn, settings, "rad", "guess", f"203.0.113.{n}", now=10.0 + n)
    with pytest.raises(LoginRefused, match="too many"):  # a browser without the cookie: locked
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.9", now=20.0)
    token, session = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.9", now=21.0, device=device)
    assert session.user_name == "rad" and sessions.session_for(conn, settings, token, now=22.0) is not None


def test_a_locked_address_does_not_lock_out_a_user_at_their_own_browser(conn):
    """Issue 24, W4: 21 failed sign-ins with random names from one address (behind a
    reverse proxy on this host: every client's address) and a real user from it."""
    accounts.add_user(conn, "boss", "admin", PASSWORD, "test")
    settings = WebSettings(login_failures_per_address=20)
    device = _signed_in_once(conn, settings, "boss", now=0.0)
    for n in range(21):
        with pytest.raises(LoginRefused):
            sessions.sign_in(conn, settings, f"nobody{n}", "guess", "127.0.0.1", now=10.0 + n)
    with pytest.raises(LoginRefused, match="too many"):
        sessions.sign_in(conn, settings, "boss", PASSWORD, "127.0.0.1", now=40.0)
    assert sessions.sign_in(conn, settings, "boss", PASSWORD, "127.0.0.1", now=41.0, device=device)[1].role == "admin"


def test_a_device_cookie_is_throttled_on_its_own_failures_and_vouches_for_its_user_only(conn):
    accounts.add_user(conn, "boss", "admin", PASSWORD, "test")
    settings = WebSettings(login_failures_per_user=5)
    device = _signed_in_once(conn, settings, "rad", now=0.0)
    for n in range(5):
        with pytest.raises(LoginRefused, match="wrong"):
            sessions.sign_in(conn, settings, "rad", "guess", "10.0.0.9", now=10.0 + n, device=device)
    with pytest.raises(LoginRefused, match="too many"):  # a stolen cookie guesses no faster than anyone
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.9", now=20.0, device=device)
    for n in range(5):
        with pytest.raises(LoginRefused):
            sessions.sign_in(conn, settings, "boss", "guess", f"203.0.113.{n}", now=30.0 + n)
    with pytest.raises(LoginRefused, match="too many"):  # rad's cookie says nothing about boss
        sessions.sign_in(conn, settings, "boss", PASSWORD, "10.0.0.9", now=40.0, device=device)


def test_a_device_cookie_expires(conn):
    settings = WebSettings(login_failures_per_user=5)
    device = _signed_in_once(conn, settings, "rad", now=0.0)
    later = sessions.DEVICE_DAYS * 86400 + 1.0
    for n in range(5):
        with pytest.raises(LoginRefused):
            sessions.sign_in(conn, settings, "rad", "guess", f"203.0.113.{n}", now=later + n)
    with pytest.raises(LoginRefused, match="too many"):
        sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.9", now=later + 10, device=device)
    assert sessions.remember_device(conn, "rad", device, now=later + 20) not in (None, device)


def test_a_database_locked_by_another_process_does_not_hold_a_signed_in_request(conn, tmp_path):
    """Issue 24, R5-sqlite-locked: /worklist answered 500 after 30 s while another process
    held the write lock, waiting to write the session's last-seen time."""
    import sqlite3

    settings = WebSettings()
    token, _ = sessions.sign_in(conn, settings, "rad", PASSWORD, "10.0.0.1", now=0.0)
    holder = sqlite3.connect(tmp_path / "appliance.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        session = sessions.session_for(conn, settings, token, now=sessions.TOUCH_EVERY_S + 1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert session is not None and session.user_name == "rad"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # the usual wait is back
    assert sessions.session_for(conn, settings, token, now=sessions.TOUCH_EVERY_S + 2) is not None
    last_seen = conn.execute("SELECT last_seen_at FROM web_sessions").fetchone()[0]
    assert last_seen == sessions.TOUCH_EVERY_S + 2  # written once the lock was gone

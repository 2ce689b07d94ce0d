"""Signed-in sessions and sign-in attempts: the one writer of ``web_sessions`` and
``web_login_attempts``.

The browser holds a random session id; the database holds its sha256, the CSRF token of
the session, and when it was made and last used. A session ends on sign-out, after
``session_idle_minutes`` without a request, ``session_absolute_hours`` after sign-in, or
when its user is disabled or given a new password (the user's credentials epoch moved
since the session began; re-enabling does not bring it back). Sign-in is throttled per user name and per address.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from appliance.audit import chain as audit_log
from appliance.config import WebSettings
from appliance.db import transaction
from appliance.errors import LoginRefused
from appliance.web import accounts

#: A session's last-seen time is written at most this often (seconds), not on every request.
TOUCH_EVERY_S = 30.0
#: How far in the future a stored time may lie before it is taken for a wall-clock step back.
CLOCK_SLACK_S = 60.0


@dataclass(frozen=True)
class Session:
    token_sha256: str
    user_name: str
    role: str
    csrf_token: str
    created_at: float


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(
    conn: sqlite3.Connection, settings: WebSettings, name: str, password: str, address: str, now: float
) -> tuple[str, Session]:
    """Check the throttle and the password; on success start a session.

    Returns
    -------
    (str, Session)
        The session id for the cookie (shown once) and the session.

    Raises
    ------
    LoginRefused
        Throttled, or wrong name/password, or disabled (the message does not say which).
    """
    # Failures dated after now were made before the wall clock stepped back: they do not
    # lock anyone out for the length of the step.
    window, latest = now - settings.login_lockout_minutes * 60, now + CLOCK_SLACK_S
    with transaction(conn):  # count and claim an attempt under one write lock: no race past the limit
        user_failures = conn.execute(
            "SELECT COUNT(*) FROM web_login_attempts WHERE user_name = ? AND ok = 0 AND at > ? AND at <= ?",
            (name, window, latest),
        ).fetchone()[0]
        address_failures = conn.execute(
            "SELECT COUNT(*) FROM web_login_attempts WHERE address = ? AND ok = 0 AND at > ? AND at <= ?",
            (address, window, latest),
        ).fetchone()[0]
        throttled = (
            user_failures >= settings.login_failures_per_user or address_failures >= settings.login_failures_per_address
        )
        if throttled:
            audit_log.append_in(conn, "web-login-throttled", {"user": name, "address": address})
        else:  # a failure until the password proves right, so attempts in flight count
            attempt = conn.execute(
                "INSERT INTO web_login_attempts (user_name, address, ok, at) VALUES (?,?,0,?)", (name, address, now)
            ).lastrowid
    if throttled:
        raise LoginRefused(f"too many failed sign-ins; try again in {settings.login_lockout_minutes:g} minutes")
    user = accounts.authenticate(conn, name, password)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with transaction(conn):
        if user is None:
            audit_log.append_in(conn, "web-login-failed", {"user": name, "address": address})
        else:
            conn.execute("UPDATE web_login_attempts SET ok = 1 WHERE rowid = ?", (attempt,))
            conn.execute(
                "INSERT INTO web_sessions (token_sha256, user_id, csrf_token, address, created_at, "
                "last_seen_at, credentials_epoch) "
                "SELECT ?, ?, ?, ?, ?, ?, credentials_epoch FROM web_users WHERE id = ?",
                (_sha(token), user.id, csrf, address, now, now, user.id),
            )
            audit_log.append_in(conn, "web-login", {"user": name, "role": user.role, "address": address})
    if user is None:  # raised after the commit, so the failed attempt is counted
        raise LoginRefused("user name or password is wrong, or the user is disabled")
    return token, Session(_sha(token), user.name, user.role, csrf, now)


def session_for(conn: sqlite3.Connection, settings: WebSettings, token: str, now: float) -> Session | None:
    """The live session with this id (touching its last-seen time), or None."""
    row = conn.execute(
        "SELECT s.token_sha256, u.name, u.role, s.csrf_token, s.created_at, s.last_seen_at, s.ended_at, "
        "u.disabled, s.credentials_epoch != u.credentials_epoch "
        "FROM web_sessions s JOIN web_users u ON u.id = s.user_id WHERE s.token_sha256 = ?",
        (_sha(token),),
    ).fetchone()
    if row is None:
        return None
    sha, name, role, csrf, created, last_seen, ended, disabled, credentials_changed = row
    expired = (
        now - last_seen > settings.session_idle_minutes * 60
        or now - created > settings.session_absolute_hours * 3600
        or created > now + CLOCK_SLACK_S  # made before the clock stepped back: its age is unknown
    )
    if ended is not None or disabled:
        return None
    if credentials_changed:
        end(conn, sha, "password reset or user disabled", now)
        return None
    if expired:
        end(conn, sha, "timed out", now)
        return None
    if now - last_seen > TOUCH_EVERY_S:
        with transaction(conn):
            conn.execute("UPDATE web_sessions SET last_seen_at = ? WHERE token_sha256 = ?", (now, sha))
    return Session(sha, name, role, csrf, created)


def end(conn: sqlite3.Connection, token_sha256: str, reason: str, now: float) -> None:
    """End a session (sign-out, timeout, revoked by an admin); audited once."""
    with transaction(conn):
        row = conn.execute(
            "SELECT u.name FROM web_sessions s JOIN web_users u ON u.id = s.user_id "
            "WHERE s.token_sha256 = ? AND s.ended_at IS NULL",
            (token_sha256,),
        ).fetchone()
        if row is None:
            return
        conn.execute(
            "UPDATE web_sessions SET ended_at = ?, end_reason = ? WHERE token_sha256 = ?", (now, reason, token_sha256)
        )
        audit_log.append_in(
            conn, "web-logout" if reason == "signed out" else "web-session-ended", {"user": row[0], "reason": reason}
        )


def live_sessions(conn: sqlite3.Connection, settings: WebSettings, now: float) -> list[dict]:
    rows = conn.execute(
        "SELECT s.token_sha256, u.name, u.role, s.address, s.created_at, s.last_seen_at FROM web_sessions s "
        "JOIN web_users u ON u.id = s.user_id WHERE s.ended_at IS NULL AND u.disabled = 0 "
        "AND s.credentials_epoch = u.credentials_epoch "
        "AND s.last_seen_at > ? AND s.created_at > ? ORDER BY s.created_at DESC",
        (now - settings.session_idle_minutes * 60, now - settings.session_absolute_hours * 3600),
    )
    return [
        {
            "id": r[0][:16],
            "sha": r[0],
            "user": r[1],
            "role": r[2],
            "address": r[3],
            "created_at": r[4],
            "last_seen_at": r[5],
        }
        for r in rows
    ]

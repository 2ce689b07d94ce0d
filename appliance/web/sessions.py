"""Signed-in sessions and sign-in attempts: the one writer of ``web_sessions``,
``web_login_attempts`` and ``web_login_devices``.

The browser holds a random session id; the database holds its sha256, the CSRF token of
the session, and when it was made and last used. A session ends on sign-out, after
``session_idle_minutes`` without a request, ``session_absolute_hours`` after sign-in, or
when its user is disabled or given a new password (the user's credentials epoch moved
since the session began; re-enabling does not bring it back).

Sign-in is throttled per user name and per address, except for a browser holding a device
cookie of that user (OWASP's "device cookies"): one it received when it last signed in as
that user, kept ``DEVICE_DAYS``. Such a browser is throttled on its own failures alone, so
guesses from elsewhere (W2, W4: five wrong passwords for any name locked its user out;
behind a reverse proxy on this host every client shares one address) never lock out a
user at the browser they sign in from.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from dataclasses import dataclass

from appliance.audit import chain as audit_log
from appliance.config import WebSettings
from appliance.db import transaction, waiting_at_most
from appliance.errors import LoginRefused
from appliance.web import accounts

LOG = logging.getLogger(__name__)

#: A session's last-seen time is written at most this often (seconds), not on every request.
TOUCH_EVERY_S = 30.0
#: How long the last-seen write waits for a locked database (ms) before it is skipped.
TOUCH_WAIT_MS = 200
#: How long a device cookie vouches for a browser (days).
DEVICE_DAYS = 180
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
    conn: sqlite3.Connection,
    settings: WebSettings,
    name: str,
    password: str,
    address: str,
    now: float,
    device: str | None = None,
) -> tuple[str, Session]:
    """Check the throttle and the password; on success start a session.

    ``device`` is the browser's device cookie, if any; one this user was given (and not
    expired) exempts the attempt from the user's and the address's throttle, and counts it
    against the device's own.

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
    known_device = _device_of(conn, name, device, now)
    with transaction(conn):  # count and claim an attempt under one write lock: no race past the limit
        if known_device is not None:
            device_failures = conn.execute(
                "SELECT COUNT(*) FROM web_login_attempts WHERE device_sha256 = ? AND ok = 0 AND at > ? AND at <= ?",
                (known_device, window, latest),
            ).fetchone()[0]
            throttled = device_failures >= settings.login_failures_per_user
        else:
            user_failures = conn.execute(
                "SELECT COUNT(*) FROM web_login_attempts WHERE user_name = ? AND ok = 0 AND at > ? AND at <= ? "
                "AND device_sha256 IS NULL",
                (name, window, latest),
            ).fetchone()[0]
            address_failures = conn.execute(
                "SELECT COUNT(*) FROM web_login_attempts WHERE address = ? AND ok = 0 AND at > ? AND at <= ? "
                "AND device_sha256 IS NULL",
                (address, window, latest),
            ).fetchone()[0]
            throttled = (
                user_failures >= settings.login_failures_per_user
                or address_failures >= settings.login_failures_per_address
            )
        if throttled:
            audit_log.append_in(conn, "web-login-throttled", {"user": name, "address": address})
        else:  # a failure until the password proves right, so attempts in flight count
            attempt = conn.execute(
                "INSERT INTO web_login_attempts (user_name, address, ok, at, device_sha256) VALUES (?,?,0,?,?)",
                (name, address, now, known_device),
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


def _device_of(conn: sqlite3.Connection, name: str, device: str | None, now: float) -> str | None:
    """The hash of ``device`` when it is a live device cookie of user ``name``, else None."""
    if not device:
        return None
    row = conn.execute(
        "SELECT token_sha256 FROM web_login_devices WHERE token_sha256 = ? AND user_name = ? AND created_at > ?",
        (_sha(device), name, now - DEVICE_DAYS * 86400),
    ).fetchone()
    return row[0] if row else None


def remember_device(conn: sqlite3.Connection, name: str, device: str | None, now: float) -> str | None:
    """After ``name`` signed in: a new device cookie for the browser (returned, shown once;
    only its hash is kept), or None when the one it holds is already this user's."""
    if _device_of(conn, name, device, now) is not None:
        return None
    token = secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute(
            "INSERT INTO web_login_devices (token_sha256, user_name, created_at) VALUES (?,?,?)",
            (_sha(token), name, now),
        )
        conn.execute("DELETE FROM web_login_devices WHERE created_at <= ?", (now - DEVICE_DAYS * 86400,))
    return token


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
        try:  # best effort: a database another process holds locked must not hold the page (R5)
            with waiting_at_most(conn, TOUCH_WAIT_MS), transaction(conn):
                conn.execute("UPDATE web_sessions SET last_seen_at = ? WHERE token_sha256 = ?", (now, sha))
        except sqlite3.OperationalError as exc:
            LOG.info("session last-seen time not written, the next request tries again: %s", exc)
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

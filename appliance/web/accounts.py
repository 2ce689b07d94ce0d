"""Web users and API tokens: the one writer of ``web_users`` and ``web_tokens``.

Passwords are kept as Argon2id hashes (argon2-cffi); tokens as the sha256 of a random
secret that is shown once. Every change is an audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.errors import AccessError

ROLES = ("radiologist", "biomed", "admin")
MIN_PASSWORD_LENGTH = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASHER = PasswordHasher()  # Argon2id with the library's current parameters
#: Verified against when a user name is unknown, so both answers take the same time.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: float


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: str
    created_at: float
    revoked_at: float | None


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccessError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccessError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def list_users(conn: sqlite3.Connection) -> list[User]:
    rows = conn.execute("SELECT id, name, role, disabled, created_at FROM web_users ORDER BY name")
    return [User(i, n, r, bool(d), c) for i, n, r, d, c in rows]


def count_users(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM web_users").fetchone()[0]


def add_user(conn: sqlite3.Connection, name: str, role: str, password: str, actor: str) -> User:
    """Create a user; refuses a taken name, an unknown role or a short password."""
    if not _NAME.match(name):
        raise AccessError(f"user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    check_role(role)
    password_hash = _HASHER.hash(check_password(password))
    now = time.time()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM web_users WHERE name = ?", (name,)).fetchone():
            raise AccessError(f"user {name!r} already exists")
        conn.execute(
            "INSERT INTO web_users (name, role, password_hash, created_at, updated_at) VALUES (?,?,?,?,?)",
            (name, role, password_hash, now, now),
        )
        audit_log.append_in(conn, "web-user-added", {"user": name, "role": role, "actor": actor})
    return user_named(conn, name)


def user_named(conn: sqlite3.Connection, name: str) -> User:
    row = conn.execute("SELECT id, name, role, disabled, created_at FROM web_users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise AccessError(f"no user {name!r}")
    return User(row[0], row[1], row[2], bool(row[3]), row[4])


def authenticate(conn: sqlite3.Connection, name: str, password: str) -> User | None:
    """The user if the password is right and the user is enabled, else None."""
    row = conn.execute("SELECT password_hash, disabled FROM web_users WHERE name = ?", (name,)).fetchone()
    try:
        _HASHER.verify(row[0] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row[1]:
        return None
    return user_named(conn, name)


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool, actor: str) -> None:
    """Disable or enable a user. Disabling moves the credentials epoch, so every session
    the user had is over for good, not only while disabled."""
    with transaction(conn):
        if (
            conn.execute(
                "UPDATE web_users SET disabled = ?, updated_at = ?, credentials_epoch = credentials_epoch + ? "
                "WHERE name = ?",
                (int(disabled), time.time(), int(disabled), name),
            ).rowcount
            != 1
        ):
            raise AccessError(f"no user {name!r}")
        audit_log.append_in(
            conn, "web-user-disabled" if disabled else "web-user-enabled", {"user": name, "actor": actor}
        )


def reset_password(conn: sqlite3.Connection, name: str, password: str, actor: str) -> None:
    """Set a new password; the credentials epoch moves, so the user's sessions are over."""
    password_hash = _HASHER.hash(check_password(password))
    with transaction(conn):
        if (
            conn.execute(
                "UPDATE web_users SET password_hash = ?, updated_at = ?, credentials_epoch = credentials_epoch + 1 "
                "WHERE name = ?",
                (password_hash, time.time(), name),
            ).rowcount
            != 1
        ):
            raise AccessError(f"no user {name!r}")
        audit_log.append_in(conn, "web-password-reset", {"user": name, "actor": actor})


def create_token(conn: sqlite3.Connection, role: str, name: str, actor: str) -> str:
    """A new API token for ``role``; the secret is returned once and only its hash kept."""
    check_role(role)
    if not name or len(name) > 64:
        raise AccessError("token name must be 1-64 characters")
    token = "tap_" + secrets.token_urlsafe(32)
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO web_tokens (name, role, token_sha256, created_at) VALUES (?,?,?,?)",
            (name, role, token_sha256(token), time.time()),
        )
        audit_log.append_in(
            conn, "web-token-created", {"token_id": cursor.lastrowid, "name": name, "role": role, "actor": actor}
        )
    return token


def list_tokens(conn: sqlite3.Connection) -> list[Token]:
    rows = conn.execute("SELECT id, name, role, created_at, revoked_at FROM web_tokens ORDER BY id")
    return [Token(*row) for row in rows]


def revoke_token(conn: sqlite3.Connection, token_id: int, actor: str) -> None:
    with transaction(conn):
        if (
            conn.execute(
                "UPDATE web_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), token_id)
            ).rowcount
            != 1
        ):
            raise AccessError(f"no live token with id {token_id}")
        audit_log.append_in(conn, "web-token-revoked", {"token_id": token_id, "actor": actor})


def token_holder(conn: sqlite3.Connection, token: str) -> Token | None:
    """The live token with this secret, or None."""
    row = conn.execute(
        "SELECT id, name, role, created_at, revoked_at FROM web_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
        (token_sha256(token),),
    ).fetchone()
    return Token(*row) if row else None

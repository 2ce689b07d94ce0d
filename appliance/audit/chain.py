"""The append-only, hash-chained audit log.

Each row carries ``hash = sha256(prev_hash || canonical(seq, at, kind, payload))``, so an
edited, deleted or reordered row breaks the chain at a place :func:`verify_chain` names.
A log cut short, emptied, or rewritten and re-hashed is caught by the anchor kept outside
the database (:mod:`appliance.audit.anchor`), moved to the head after each commit.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from appliance.audit import anchor
from appliance.db import after_commit, database_file, transaction

GENESIS = "0" * 64
_append_lock = threading.Lock()


def row_hash(prev_hash: str, seq: int, at: str, kind: str, payload: str) -> str:
    """The chain hash of one row (pure)."""
    body = json.dumps([seq, at, kind, payload], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(db: sqlite_utils.Database, kind: str, payload: dict[str, Any]) -> int:
    """Append one event in its own ``IMMEDIATE`` transaction; return its sequence number.

    Reading the chain head and inserting under one write lock means concurrent writers
    (threads or processes) never fork the chain.
    """
    with _append_lock, transaction(db.conn) as conn:
        return append_in(conn, kind, payload)


def append_in(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> int:
    """Append one event inside the caller's open write transaction (so the event commits
    or rolls back with the change it records)."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    digest = row_hash(prev, seq, at, kind, text)
    conn.execute(
        "INSERT INTO audit_log (seq, at, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
        (seq, at, kind, text, prev, digest),
    )
    database = database_file(conn)
    if database is not None:
        after_commit(conn, "audit-anchor", lambda: anchor.record(database, seq, digest, _hash_at(conn)))
    return seq


def _hash_at(conn: sqlite3.Connection) -> Callable[[int], str | None]:
    """``seq -> hash`` of the log's row, read through ``conn`` (None when there is none)."""

    def hash_at(seq: int) -> str | None:
        row = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    return hash_at


@dataclass(frozen=True)
class ChainProblem:
    """Where the chain breaks, and how."""

    seq: int
    problem: str


def verify_chain(rows: Iterable[tuple[int, str, str, str, str, str]]) -> list[ChainProblem]:
    """Check rows ``(seq, at, kind, payload, prev_hash, hash)`` in sequence order (pure).

    Returns
    -------
    list of ChainProblem
        Empty when the chain is intact.
    """
    problems: list[ChainProblem] = []
    expected_seq, prev = 1, GENESIS
    for seq, at, kind, payload, prev_hash, stored in rows:
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "out of order"
            problems.append(ChainProblem(seq, f"rows {what}: expected seq {expected_seq}"))
        if prev_hash != prev:
            problems.append(ChainProblem(seq, "prev_hash does not match the previous row"))
        if row_hash(prev_hash, seq, at, kind, payload) != stored:
            problems.append(ChainProblem(seq, "row content does not match its hash (edited)"))
        expected_seq, prev = seq + 1, stored
    return problems


#: The audit log's rows in the order they were appended, as :func:`verify_chain` reads them.
AUDIT_ROWS = "SELECT seq, at, kind, payload, prev_hash, hash FROM audit_log ORDER BY rowid"


def verify_database(db: sqlite_utils.Database) -> list[ChainProblem]:
    """Verify the whole audit log stored in ``db``, and that it still holds the head its
    anchor names."""
    rows = db.conn.execute(AUDIT_ROWS)
    problems = verify_chain(rows)
    database = database_file(db.conn)
    if database is not None:
        count = db.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]

        def hash_at(seq: int) -> str | None:
            row = db.conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
            return row[0] if row else None

        problems += [ChainProblem(seq, problem) for seq, problem in anchor.problems(database, count, hash_at)]
    return problems

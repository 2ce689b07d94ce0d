"""The durable result outbox: one row per (result object file, destination).

A row is ``pending`` until its destination acknowledges it (``sent``, warnings included) or
it is given up on (``dead``: a permanent failure status, an unreadable file, or
``sender.max_attempts`` failed tries). Rows live in the ``outbox`` table (migration 2 of
:mod:`appliance.db`), so a restarted sender resumes where the last one stopped. A row
queued with ``alert`` (a flagged result) that goes dead raises an alert: an audit event
``alert-result-dead-lettered`` in the same transaction, and :meth:`Outbox.alerts` for the
status report.

Times are wall-clock seconds (``time.time()``) because they outlive the process. The table
is written by the process that runs the :class:`~appliance.send.sender.Sender`, plus
whoever enqueues results (the inference worker) and whoever retries or discards a dead
letter (the admin page, ``appliance outbox``: both audited); each write is one short
transaction.

This module also keeps ``send_lanes``: each destination's circuit breaker as the sender
last saw it (:meth:`Outbox.record_lane`, read back with :func:`lane_states`), so that
other processes can show what only the sender's memory holds.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from pydicom.dataset import Dataset

from appliance.audit import chain as audit_log
from appliance.config import Destination
from appliance.db import transaction
from appliance.send.policy import Breaker
from appliance.states import OutboxState

_COLUMNS = (
    "id, path, sop_class_uid, sop_instance_uid, study_instance_uid, destination, state, "
    "attempts, next_attempt_at, last_status, last_error, created_at, updated_at, sent_at, alert"
)


def destination_key(destination: Destination | str) -> str:
    """The outbox's name for a destination: ``AE@host:port``."""
    if isinstance(destination, str):
        destination = Destination.parse(destination)
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


@dataclass(frozen=True)
class OutboxItem:
    """One result object on its way to one destination."""

    id: int
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    destination: str
    state: OutboxState
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    sent_at: float | None
    alert: int = 0

    @classmethod
    def from_row(cls, row: tuple) -> OutboxItem:
        fields = list(row)  # in the order of _COLUMNS
        fields[1], fields[6] = Path(fields[1]), OutboxState(fields[6])
        return cls(*fields)


@dataclass(frozen=True)
class OutgoingObject:
    """A result object file on its way out: what the outbox queues for every destination.

    The file is DICOM Part 10 (with file meta); the outbox never deletes it. With
    ``alert`` (a flagged result), giving the object up raises an alert.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    alert: bool = False

    @classmethod
    def of(cls, path: Path, ds: Dataset, alert: bool = False) -> OutgoingObject:
        """The object written to ``path`` from ``ds``."""
        return cls(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), alert)


def enqueue_in(
    conn: sqlite3.Connection, obj: OutgoingObject, destinations: Iterable[Destination | str], now: float
) -> list[int]:
    """Queue one result object for each destination inside the caller's open transaction.

    Use this to commit results and their outbox rows together (e.g. with the job that made
    them). Queuing the same SOP Instance UID for the same destination again is a no-op.

    Returns
    -------
    list of int
        The outbox ids, one per destination, in the order given.
    """
    ids = []
    for destination in destinations:
        key = destination_key(destination)
        conn.execute(
            "INSERT INTO outbox (path, sop_class_uid, sop_instance_uid, study_instance_uid,"
            " destination, state, next_attempt_at, created_at, updated_at, alert)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (sop_instance_uid, destination) DO NOTHING",
            (
                str(obj.path),
                obj.sop_class_uid,
                obj.sop_instance_uid,
                obj.study_instance_uid,
                key,
                OutboxState.PENDING,
                now,
                now,
                now,
                int(obj.alert),
            ),
        )
        ids.append(
            conn.execute(
                "SELECT id FROM outbox WHERE sop_instance_uid = ? AND destination = ?",
                (obj.sop_instance_uid, key),
            ).fetchone()[0]
        )
    return ids


class Outbox:
    """The outbox table, safe to share between the threads of one process.

    Parameters
    ----------
    db : sqlite_utils.Database
        From :func:`appliance.db.open_database`. Every statement the outbox runs on
        this connection holds the outbox's lock, so give it a connection that no thread
        outside this outbox opens transactions on.
    """

    def __init__(self, db: sqlite_utils.Database):
        self._conn = db.conn
        self._lock = threading.Lock()

    def _write(self, sql: str, params: tuple) -> int:
        with self._lock, transaction(self._conn):
            return self._conn.execute(sql, params).rowcount

    def _select(self, where: str, params: tuple) -> list[OutboxItem]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where}", params)
            return [OutboxItem.from_row(row) for row in rows.fetchall()]

    def enqueue(
        self, obj: OutgoingObject, destinations: Iterable[Destination | str], now: float | None = None
    ) -> list[int]:
        """Queue one result object file for each destination, in one transaction.

        Parameters
        ----------
        obj : OutgoingObject
            The file and its identity (for the peers' presentation contexts and for finding it).
        destinations : iterable of Destination or "AE@host:port"
            Usually ``settings.dicom.destinations``.
        now : float, optional
            Enqueue time (due at once); defaults to ``time.time()``.

        Returns
        -------
        list of int
            One outbox id per destination; an object already queued keeps its row and id.
        """
        now = time.time() if now is None else now
        with self._lock, transaction(self._conn):
            return enqueue_in(self._conn, obj, destinations, now)

    def get(self, item_id: int) -> OutboxItem | None:
        found = self._select("id = ?", (item_id,))
        return found[0] if found else None

    def items(self, destination: str | None = None, state: OutboxState | None = None) -> list[OutboxItem]:
        """Rows, oldest first, optionally of one destination key and/or one state."""
        where, params = ["1"], []
        if destination is not None:
            where.append("destination = ?")
            params.append(destination)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        return self._select(" AND ".join(where) + " ORDER BY id", tuple(params))

    def due(self, destination: str, now: float, limit: int, horizon_s: float = math.inf) -> list[OutboxItem]:
        """Pending rows of one destination whose time has come, longest waiting first.

        A row due more than ``horizon_s`` (the longest wait the sender ever sets) after
        ``now`` was scheduled before the wall clock stepped back: it is due now, so a 5 s
        retry never turns into the step's hour."""
        return self._select(
            "destination = ? AND state = ? AND (next_attempt_at <= ? OR next_attempt_at > ?) "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (destination, OutboxState.PENDING, now, now + horizon_s, limit),
        )

    def next_due_at(self, destination: str) -> float | None:
        """When the next pending row of this destination falls due; None if none is pending."""
        with self._lock:
            return self._conn.execute(
                "SELECT min(next_attempt_at) FROM outbox WHERE destination = ? AND state = ?",
                (destination, OutboxState.PENDING),
            ).fetchone()[0]

    def mark_sent(self, item_id: int, status: int, warning: str | None, now: float) -> None:
        """The destination acknowledged the object (status 0x0000 or a warning)."""
        self._write(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
            " last_error = ?, sent_at = ?, updated_at = ? WHERE id = ?",
            (OutboxState.SENT, status, warning, now, now, item_id),
        )

    def mark_failed(self, item_id: int, status: int | None, error: str, retry_at: float | None, now: float) -> None:
        """One failed try: pending again at ``retry_at``, or dead when ``retry_at`` is None.

        A row queued with ``alert`` that goes dead appends the audit event
        ``alert-result-dead-lettered`` in the same transaction.
        """
        state = OutboxState.PENDING if retry_at is not None else OutboxState.DEAD
        with self._lock, transaction(self._conn):
            self._conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
                " last_error = ?, next_attempt_at = coalesce(?, next_attempt_at), updated_at = ?"
                " WHERE id = ?",
                (state, status, error, retry_at, now, item_id),
            )
            if state == OutboxState.DEAD:
                row = self._conn.execute(
                    "SELECT sop_instance_uid, study_instance_uid, destination, alert FROM outbox WHERE id = ?",
                    (item_id,),
                ).fetchone()
                if row is not None and row[3]:
                    audit_log.append_in(
                        self._conn,
                        "alert-result-dead-lettered",
                        {
                            "outbox_id": item_id,
                            "sop_instance_uid": row[0],
                            "study_instance_uid": row[1],
                            "destination": row[2],
                            "status": status,
                            "error": error[:200],
                        },
                    )

    def postpone(self, destination: str, until: float, error: str, now: float) -> int:
        """The destination is unreachable: hold every pending row until ``until``.

        No try is counted: a destination that is down never dead-letters its objects.
        Returns how many rows were held.
        """
        return self._write(
            "UPDATE outbox SET next_attempt_at = max(next_attempt_at, ?), last_error = ?,"
            " updated_at = ? WHERE destination = ? AND state = ?",
            (until, error, now, destination, OutboxState.PENDING),
        )

    def dead_letters(self, destination: str | None = None) -> list[OutboxItem]:
        """The objects given up on, for the admin page and ``retry``."""
        return self.items(destination, OutboxState.DEAD)

    def retry(self, item_id: int, actor: str, now: float | None = None) -> bool:
        """Put a dead-lettered object back in its queue, due now, with a fresh try count.

        Audited (``outbox-retried``, with ``actor``) in the same transaction.

        Returns
        -------
        bool
            False when no dead-lettered row has this id (nothing changes, nothing is audited).
        """
        now = time.time() if now is None else now
        return self._change_dead(
            item_id,
            "outbox-retried",
            actor,
            "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ? WHERE id = ?",
            (OutboxState.PENDING, now, now, item_id),
        )

    def discard(self, item_id: int, actor: str) -> bool:
        """Give up on a dead-lettered object for good: its row goes, the audit log keeps
        what it was (``outbox-discarded``: id, destination, SOP Instance UID, last error).

        Returns
        -------
        bool
            False when no dead-lettered row has this id.
        """
        return self._change_dead(item_id, "outbox-discarded", actor, "DELETE FROM outbox WHERE id = ?", (item_id,))

    def _change_dead(self, item_id: int, kind: str, actor: str, sql: str, params: tuple) -> bool:
        with self._lock, transaction(self._conn):
            row = self._conn.execute(
                "SELECT destination, sop_instance_uid, attempts, last_status, last_error, alert FROM outbox"
                " WHERE id = ? AND state = ?",
                (item_id, OutboxState.DEAD),
            ).fetchone()
            if row is None:
                return False
            self._conn.execute(sql, params)
            destination, sop_instance_uid, attempts, last_status, last_error, alert = row
            audit_log.append_in(
                self._conn,
                kind,
                {
                    "outbox_id": item_id,
                    "destination": destination,
                    "sop_instance_uid": sop_instance_uid,
                    "attempts": attempts,
                    "last_status": last_status,
                    "last_error": last_error,
                    "flagged_result": bool(alert),
                    "actor": actor,
                },
            )
            return True

    def record_lane(self, destination: str, breaker: Breaker, not_before: float, error: str | None, now: float) -> None:
        """Save one destination's breaker as the sender holds it (the sender calls this)."""
        self._write(
            "INSERT INTO send_lanes (destination, failures, threshold, cooldown_s, opened_at, not_before,"
            " last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " failures = excluded.failures, threshold = excluded.threshold, cooldown_s = excluded.cooldown_s,"
            " opened_at = excluded.opened_at, not_before = excluded.not_before,"
            " last_error = excluded.last_error, updated_at = excluded.updated_at",
            (
                destination,
                breaker.failures,
                breaker.threshold,
                breaker.cooldown_s,
                breaker.opened_at,
                not_before,
                error,
                now,
            ),
        )

    def alerts(self) -> list[OutboxItem]:
        """Dead-lettered objects that raise an alert (flagged results PACS never got)."""
        return self._select("state = ? AND alert = 1 ORDER BY id", (OutboxState.DEAD,))

    def counts(self) -> dict[str, dict[str, int]]:
        """``{destination: {state: rows}}``, for status pages and metrics."""
        with self._lock:
            rows = self._conn.execute("SELECT destination, state, count(*) FROM outbox GROUP BY destination, state")
            counts: dict[str, dict[str, int]] = {}
            for destination, state, count in rows.fetchall():
                counts.setdefault(destination, {})[state] = count
            return counts


@dataclass(frozen=True)
class LaneState:
    """A destination's circuit breaker as the sender last saved it."""

    destination: str
    breaker: Breaker
    not_before: float  # no association before this time (backoff or open circuit)
    last_error: str | None
    updated_at: float


def lane_states(conn: sqlite3.Connection) -> dict[str, LaneState]:
    """``{destination: LaneState}`` for every destination a sender has saved."""
    rows = conn.execute(
        "SELECT destination, failures, threshold, cooldown_s, opened_at, not_before,"
        " last_error, updated_at FROM send_lanes"
    ).fetchall()
    return {
        d: LaneState(d, Breaker(threshold, cooldown, failures, opened), not_before, error, updated)
        for d, failures, threshold, cooldown, opened, not_before, error, updated in rows
    }

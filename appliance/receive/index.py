"""The ingest index: instance rows, series state and the jobs they queue.

The listener process is the one writer of ``instances``, ``instance_replacements`` and
``series`` while a series is receiving, and the one that queues jobs. Calls are
thread-safe (associations run in threads) and each is one SQLite transaction.

Series states written here: ``receiving`` then ``queued``. An instance that arrives after
its series was queued reopens it (``receiving`` again) and marks any still-queued job of
the earlier generation ``superseded``; completion then queues a job for the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import sqlite_utils

from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.receive.validate import InstanceHeader


class StoreOutcome(Enum):
    """What recording a received instance did."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP instance, same bytes: acknowledged, nothing written
    REPLACED = "replaced"  # same SOP instance, different bytes: new copy, change recorded


@dataclass(frozen=True)
class ReceivedInstance:
    """One received instance, ready to index."""

    header: InstanceHeader
    transfer_syntax_uid: str
    size_bytes: int
    sha256: str
    path: Path
    calling_ae: str
    association_id: str


class IngestIndex:
    """Thread-safe writer of the ingest tables for one listener process."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self._lock = threading.Lock()

    def audit(self, kind: str, payload: dict) -> None:
        """Append an audit event on this index's connection, under its lock."""
        with self._lock:
            audit_log.append(self.db, kind, payload)

    def stored_sha256(self, sop_instance_uid: str) -> str | None:
        """The hash of the copy already stored for this SOP instance, if any."""
        with self._lock:
            row = self.db.conn.execute(
                "SELECT sha256 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row[0] if row else None

    def record(self, item: ReceivedInstance, now: float | None = None) -> StoreOutcome:
        """Index a received instance whose file is already durable in the spool."""
        now = time.time() if now is None else now
        h = item.header
        conn = self.db.conn
        with self._lock, transaction(conn):
            row = conn.execute(
                "SELECT sha256 FROM instances WHERE sop_instance_uid = ?", (h.sop_instance_uid,)
            ).fetchone()
            if row and row[0] == item.sha256:
                return StoreOutcome.DUPLICATE
            values = (
                h.study_instance_uid, h.series_instance_uid, h.sop_class_uid,
                item.transfer_syntax_uid, item.size_bytes, item.sha256, str(item.path),
                item.calling_ae, item.association_id, now,
            )
            if row:
                conn.execute(
                    "UPDATE instances SET study_instance_uid=?, series_instance_uid=?, "
                    "sop_class_uid=?, transfer_syntax_uid=?, size_bytes=?, sha256=?, path=?, "
                    "calling_ae=?, association_id=?, received_at=? WHERE sop_instance_uid=?",
                    (*values, h.sop_instance_uid),
                )
                conn.execute(
                    "INSERT INTO instance_replacements (sop_instance_uid, old_sha256, new_sha256, "
                    "calling_ae, association_id, replaced_at) VALUES (?,?,?,?,?,?)",
                    (h.sop_instance_uid, row[0], item.sha256, item.calling_ae, item.association_id, now),
                )
            else:
                conn.execute(
                    "INSERT INTO instances (study_instance_uid, series_instance_uid, sop_class_uid, "
                    "transfer_syntax_uid, size_bytes, sha256, path, calling_ae, association_id, "
                    "received_at, sop_instance_uid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (*values, h.sop_instance_uid),
                )
            if h.series_instance_uid:
                self._touch_series(h, item.calling_ae, 0 if row else 1, now)
        return StoreOutcome.REPLACED if row else StoreOutcome.STORED

    def _touch_series(self, h: InstanceHeader, calling_ae: str, added: int, now: float) -> None:
        conn = self.db.conn
        conn.execute(
            "INSERT INTO series (series_instance_uid, study_instance_uid, modality, body_part, "
            "series_description, calling_ae, instances, state, first_received_at, "
            "last_received_at, updated_at) VALUES (?,?,?,?,?,?,?, 'receiving', ?,?,?) "
            "ON CONFLICT (series_instance_uid) DO UPDATE SET "
            "instances = instances + excluded.instances, last_received_at = excluded.last_received_at, "
            "updated_at = excluded.updated_at, released_at = NULL, state = 'receiving', reason = NULL",
            (h.series_instance_uid, h.study_instance_uid, h.modality, h.body_part,
             h.series_description, calling_ae, added, now, now, now),
        )
        # A late arrival: the job not yet started for the earlier generation is superseded.
        conn.execute(
            "UPDATE jobs SET state = 'superseded', reason = 'new instances arrived', updated_at = ? "
            "WHERE series_instance_uid = ? AND state = 'queued'",
            (now, h.series_instance_uid),
        )

    def mark_released(self, series_uids: Iterable[str], now: float | None = None) -> None:
        """The association that carried these series was released normally."""
        uids = list(series_uids)
        if not uids:
            return
        now = time.time() if now is None else now
        with self._lock:
            self.db.conn.executemany(
                "UPDATE series SET released_at = ? WHERE series_instance_uid = ? AND state = 'receiving'",
                [(now, uid) for uid in uids],
            )

    def queue_complete_series(
        self,
        quiet_period_s: float,
        release_grace_s: float,
        still_sending: set[str] = frozenset(),  # type: ignore[assignment]
        now: float | None = None,
        priority: Callable[[str, str], int] = lambda modality, calling_ae: 0,
    ) -> list[str]:
        """Queue a job for every series that has finished arriving.

        A series is complete when nothing arrived for ``quiet_period_s``, or when the
        association that carried it was released ``release_grace_s`` ago and no other
        open association is still sending to it. ``priority(modality, calling_ae)`` gives
        the job's priority (higher is taken first).

        Returns
        -------
        list of str
            The series instance UIDs queued by this call.
        """
        now = time.time() if now is None else now
        conn = self.db.conn
        with self._lock, transaction(conn):
            rows = conn.execute(
                "SELECT series_instance_uid, last_received_at, modality, calling_ae FROM series "
                "WHERE state = 'receiving' AND (last_received_at <= ? OR "
                "(released_at IS NOT NULL AND released_at <= ?))",
                (now - quiet_period_s, now - release_grace_s),
            ).fetchall()
            queued = []
            for series_uid, last_received_at, modality, calling_ae in rows:
                quiet = last_received_at <= now - quiet_period_s
                if not quiet and series_uid in still_sending:
                    continue
                conn.execute(
                    "UPDATE series SET state = 'queued', generation = generation + 1, "
                    "updated_at = ? WHERE series_instance_uid = ?",
                    (now, series_uid),
                )
                conn.execute(
                    "INSERT INTO jobs (series_instance_uid, study_instance_uid, generation, state, "
                    "priority, created_at, updated_at) SELECT series_instance_uid, study_instance_uid, "
                    "generation, 'queued', ?, ?, ? FROM series WHERE series_instance_uid = ?",
                    (priority(modality, calling_ae), now, now, series_uid),
                )
                queued.append(series_uid)
        return queued

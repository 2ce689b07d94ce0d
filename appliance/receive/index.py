"""The ingest index: the one writer of ``instances`` and ``instance_replacements``.

The listener process owns one connection; calls are thread-safe (associations run in
threads) and each is one SQLite transaction. Series rows and jobs change only through
:mod:`appliance.jobs`, called here inside the same transaction as the instance row, so
an acknowledged instance and its series state commit together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum

import sqlite_utils

from appliance import jobs
from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.jobs import InstanceArrived, SeriesFacts
from appliance.states import SeriesState


class StoreOutcome(Enum):
    """What recording a received instance did."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP instance, same bytes: acknowledged, nothing written
    REPLACED = "replaced"  # same SOP instance, different bytes: new copy, change recorded


#: How many recently ended series :meth:`IngestIndex.clean_runs` looks at, over every sender.
CLEAN_RUN_WINDOW = 500


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

    def record(self, item: InstanceArrived, now: float | None = None) -> StoreOutcome:
        """Index a received instance whose file is already durable in the spool."""
        now = time.time() if now is None else now
        conn = self.db.conn
        with self._lock, transaction(conn):
            row = conn.execute(
                "SELECT sha256 FROM instances WHERE sop_instance_uid = ?", (item.sop_instance_uid,)
            ).fetchone()
            if row and row[0] == item.sha256:
                return StoreOutcome.DUPLICATE
            values = (
                item.study_instance_uid,
                item.series_instance_uid,
                item.sop_class_uid,
                item.transfer_syntax_uid,
                item.size_bytes,
                item.sha256,
                str(item.path),
                item.calling_ae,
                item.association_id,
                now,
            )
            if row:
                conn.execute(
                    "UPDATE instances SET study_instance_uid=?, series_instance_uid=?, "
                    "sop_class_uid=?, transfer_syntax_uid=?, size_bytes=?, sha256=?, path=?, "
                    "calling_ae=?, association_id=?, received_at=? WHERE sop_instance_uid=?",
                    (*values, item.sop_instance_uid),
                )
                conn.execute(
                    "INSERT INTO instance_replacements (sop_instance_uid, old_sha256, new_sha256, "
                    "calling_ae, association_id, replaced_at) VALUES (?,?,?,?,?,?)",
                    (item.sop_instance_uid, row[0], item.sha256, item.calling_ae, item.association_id, now),
                )
            else:
                conn.execute(
                    "INSERT INTO instances (study_instance_uid, series_instance_uid, sop_class_uid, "
                    "transfer_syntax_uid, size_bytes, sha256, path, calling_ae, association_id, "
                    "received_at, sop_instance_uid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (*values, item.sop_instance_uid),
                )
            if item.series_instance_uid:
                jobs.instance_arrived(conn, item, 0 if row else 1, now)
        return StoreOutcome.REPLACED if row else StoreOutcome.STORED

    def mark_released(self, series_uids: Iterable[str], now: float | None = None) -> None:
        """The association that carried these series was released normally."""
        uids = list(series_uids)
        if not uids:
            return
        now = time.time() if now is None else now
        with self._lock, transaction(self.db.conn) as conn:
            jobs.mark_released(conn, uids, now)

    def clean_runs(self, recent: int = CLEAN_RUN_WINDOW) -> dict[str, int]:
        """Per calling AE, how many of its most recently ended series in a row each came in
        one association and were never reopened (among the ``recent`` series last changed):
        what :meth:`appliance.config.DicomSettings.release_grace_for` learns from."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT s.calling_ae, s.generation, COUNT(DISTINCT i.association_id) FROM "
                "(SELECT series_instance_uid, calling_ae, generation, updated_at FROM series WHERE state != ? "
                "ORDER BY updated_at DESC LIMIT ?) s JOIN instances i ON i.series_instance_uid = s.series_instance_uid "
                "GROUP BY s.series_instance_uid ORDER BY s.updated_at DESC",
                (SeriesState.RECEIVING, recent),
            ).fetchall()
        return clean_run_lengths(rows)

    def queue_complete_series(
        self,
        quiet_period_s: float,
        release_grace_s: float | Callable[[str], float],
        still_sending: set[str] = frozenset(),  # type: ignore[assignment]
        now: float | None = None,
        priority: Callable[[SeriesFacts], int] = lambda facts: 0,
    ) -> list[str]:
        """Queue every series that has finished arriving: :func:`appliance.jobs.queue_complete_series`."""
        now = time.time() if now is None else now
        with self._lock, transaction(self.db.conn) as conn:
            return jobs.queue_complete_series(conn, quiet_period_s, release_grace_s, set(still_sending), now, priority)


def clean_run_lengths(rows: Iterable[tuple[str, int, int]]) -> dict[str, int]:
    """``(calling AE, generation, associations)`` of series, newest first -> per AE, the
    length of its newest run of series that each came in one association and in their
    first generation (pure)."""
    runs: dict[str, int] = {}
    ended: set[str] = set()
    for calling_ae, generation, associations in rows:
        ae = (calling_ae or "").strip()
        if ae in ended:
            continue
        if generation == 1 and associations == 1:
            runs[ae] = runs.get(ae, 0) + 1
        else:
            runs.setdefault(ae, 0)
            ended.add(ae)
    return runs

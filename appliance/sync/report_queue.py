"""The drift-report queue: anonymised drift reports wait here, in order, until the hub
holds them. The only writer of ``sync_reports``.

:func:`queue_closed_days` queues each closed day's report once per model version (a
model version with series in the drift tables, or results in any role, that day), with
its field evidence (:mod:`appliance.drift.evidence`) moving on from the to-date counts of
the previous report of that model version (:func:`previous_field`). A day is closed when
it is before today (UTC, the day the drift tables record); the report id
:func:`appliance.drift.anonymised.stable_report_id` derives from the device id, the day
and the model version, so asking again finds it queued and builds nothing, and a report
resent after a lost ledger is a duplicate the hub already holds. Every ``appliance
sync`` round starts with it, so the timer that pushes reports also makes them.

A report is checked against the anonymisation schema before it is queued (what the hub
would refuse never waits here), and it carries the audit chain head taken in the same
transaction as its own ``drift-report-queued`` audit event, so the hub holds an anchor
of this box's chain that the box cannot rewrite later.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from appliance.audit import chain as audit_log
from appliance.config import DriftSettings
from appliance.db import transaction
from appliance.drift import tables
from appliance.drift.anonymised import daily_report, stable_report_id
from appliance.drift.evidence import result_days
from appliance.drift.schema import check_report
from appliance.states import ReportState


@dataclass(frozen=True)
class QueuedReport:
    seq: int
    report_id: str
    report: dict
    audit_seq: int
    audit_hash: str

    def as_upload(self) -> dict:
        return {"report": self.report, "audit_head": {"seq": self.audit_seq, "hash": self.audit_hash}}


def queue_closed_days(
    conn: sqlite3.Connection,
    settings: DriftSettings,
    device_id: str,
    today: dt.date,
    rng: np.random.Generator | None = None,
    now: float | None = None,
) -> list[str]:
    """Queue the report of every closed day and model version not queued yet (a report
    holds the day's counts, not the monitor's judgements); return the ids queued now,
    oldest day first."""
    queued = []
    days = set(tables.model_version_days(conn, before=today)) | set(result_days(conn, before=today))
    for model_id, version, day in sorted(days, key=lambda d: (d[2], d[0], d[1])):
        report_id = stable_report_id(device_id, day, model_id, version)
        if is_queued(conn, report_id):
            continue
        report = daily_report(
            conn,
            settings,
            day,
            rng,
            model=(model_id, version),
            report_id=report_id,
            previous=functools.partial(previous_field, conn, day=day),
        )
        if enqueue_report(conn, report, now=now):
            queued.append(report_id)
    return queued


def previous_field(conn: sqlite3.Connection, model_id: str, version: str, *, day: dt.date) -> dict | None:
    """The ``field`` of the last report of this model version queued for a day before ``day``:
    the to-date counts already published, which the next report moves on from."""
    row = conn.execute(
        "SELECT body FROM sync_reports WHERE day < ? AND json_extract(body, '$.models[0].model_id') = ? "
        "AND json_extract(body, '$.models[0].model_version') = ? ORDER BY day DESC, seq DESC LIMIT 1",
        (day.isoformat(), model_id, version),
    ).fetchone()
    if row is None:
        return None
    models = json.loads(row[0])["models"]
    return models[0].get("field") if models else None


def enqueue_report(conn: sqlite3.Connection, report: dict, now: float | None = None) -> bool:
    """Queue one anonymised report for the hub; False if its report id is already queued.

    Raises
    ------
    ReportError
        The report breaks the anonymisation schema (the message names the field).
    """
    check_report(report)
    now = time.time() if now is None else now
    with transaction(conn):
        if conn.execute("SELECT 1 FROM sync_reports WHERE report_id = ?", (report["report_id"],)).fetchone():
            return False
        audit_seq = audit_log.append_in(
            conn, "drift-report-queued", {"report_id": report["report_id"], "day": report["day"]}
        )
        audit_hash = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (audit_seq,)).fetchone()[0]
        conn.execute(
            "INSERT INTO sync_reports (report_id, day, body, audit_seq, audit_hash, state, queued_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                report["report_id"],
                report["day"],
                json.dumps(report, sort_keys=True),
                audit_seq,
                audit_hash,
                ReportState.PENDING,
                now,
            ),
        )
    return True


def is_queued(conn: sqlite3.Connection, report_id: str) -> bool:
    """Whether a report with this id was ever queued (whatever became of it since)."""
    return conn.execute("SELECT 1 FROM sync_reports WHERE report_id = ?", (report_id,)).fetchone() is not None


def pending(conn: sqlite3.Connection, limit: int) -> list[QueuedReport]:
    """The oldest ``limit`` reports not yet held by the hub, in queue order."""
    rows = conn.execute(
        "SELECT seq, report_id, body, audit_seq, audit_hash FROM sync_reports WHERE state = ? ORDER BY seq LIMIT ?",
        (ReportState.PENDING, limit),
    )
    return [QueuedReport(seq, rid, json.loads(body), a_seq, a_hash) for seq, rid, body, a_seq, a_hash in rows]


def record_failure(conn: sqlite3.Connection, batch: list[QueuedReport], error: str) -> None:
    """The hub did not answer for this batch: count the try, keep the reports pending."""
    with transaction(conn):
        conn.executemany(
            "UPDATE sync_reports SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
            [(error[:500], r.seq) for r in batch],
        )


def record_results(
    conn: sqlite3.Connection, batch: list[QueuedReport], results: list[dict], now: float | None = None
) -> tuple[int, int]:
    """Apply the hub's answer: accepted or duplicate -> delivered; rejected -> rejected
    with the hub's reason (never retried: it would be refused again).

    Returns
    -------
    (delivered, rejected)
    """
    now = time.time() if now is None else now
    if len(results) != len(batch) or any(
        r.get("report_id") not in (q.report_id, None) for q, r in zip(batch, results, strict=True)
    ):
        raise ValueError("the hub's answer does not match the batch sent")
    done = dict.fromkeys(ReportState, 0)
    with transaction(conn):
        for queued, result in zip(batch, results, strict=True):
            held = result.get("status") in ("accepted", "duplicate")
            state = ReportState.DELIVERED if held else ReportState.REJECTED
            error = None if held else str(result.get("reason", "the hub gave no reason"))[:500]
            conn.execute(
                "UPDATE sync_reports SET state = ?, attempts = attempts + 1, last_error = ?, done_at = ? WHERE seq = ?",
                (state, error, now, queued.seq),
            )
            done[state] += 1
    return done[ReportState.DELIVERED], done[ReportState.REJECTED]


def counts(conn: sqlite3.Connection) -> dict:
    """Reports per state, the oldest pending one's queue time and the last rejections."""
    by_state = dict(conn.execute("SELECT state, COUNT(*) FROM sync_reports GROUP BY state").fetchall())
    oldest = conn.execute("SELECT MIN(queued_at) FROM sync_reports WHERE state = ?", (ReportState.PENDING,)).fetchone()[
        0
    ]
    rejections = [
        {"report_id": rid, "reason": reason}
        for rid, reason in conn.execute(
            "SELECT report_id, last_error FROM sync_reports WHERE state = ? ORDER BY seq DESC LIMIT 5",
            (ReportState.REJECTED,),
        )
    ]
    return {
        **{state.value: by_state.get(state, 0) for state in ReportState},
        "oldest_pending_queued_at": oldest,
        "recent_rejections": rejections,
    }

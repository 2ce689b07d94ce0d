"""Each closed day's anonymised drift report into the outbox, once per model version.

A day is closed when it is before today (UTC, the day the drift tables record). Every
model version with series on a closed day gets one report for that day, with the id
:func:`appliance.drift.report.stable_report_id` derives from the device id, the day and
the model version: asking again finds it queued and builds nothing, and a report resent
after a lost ledger is a duplicate the hub already holds. Run at the start of every
``appliance sync`` round, so the timer that pushes reports also makes them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np

from appliance.config import DriftSettings
from appliance.drift import store
from appliance.drift.report import daily_report, stable_report_id
from appliance.sync import outbox


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
    for model_id, version, day in store.model_version_days(conn, before=today):
        report_id = stable_report_id(device_id, day, model_id, version)
        if outbox.is_queued(conn, report_id):
            continue
        report = daily_report(conn, settings, day, rng, model=(model_id, version), report_id=report_id)
        if outbox.enqueue_report(conn, report, now=now):
            queued.append(report_id)
    return queued

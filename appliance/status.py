"""What ``appliance status --json`` reports: counts and the state of every series."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.drift.service import alert_summary
from appliance.send.outbox import Outbox


def collect_status(db: sqlite_utils.Database) -> dict[str, Any]:
    """Read the current state from the database (no writes)."""
    conn = db.conn
    instances = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    without_series = conn.execute(
        "SELECT COUNT(*) FROM instances WHERE series_instance_uid = ''"
    ).fetchone()[0]
    jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    series = [_series_entry(*row) for row in conn.execute(
        "SELECT study_instance_uid, series_instance_uid, modality, instances, state, reason, flag, "
        "score, model FROM series ORDER BY first_received_at")]
    return {
        "instances_received": instances,
        # Stored as sent but never triaged: the sender left out the Series Instance UID.
        "instances_without_series": without_series,
        "jobs": jobs,
        # Result objects per destination and state (pending, sent, dead).
        "outbox": Outbox(db).counts(),
        "series": series,
        # Drift alerts not yet cleared, per model version and feature.
        "drift": alert_summary(conn),
    }


def _series_entry(study: str, series: str, modality: str, instances: int, state: str,
                  reason: str | None, flag: int | None, score: float | None, model: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"study_instance_uid": study, "series_instance_uid": series,
                             "modality": modality, "instances": instances, "state": state}
    if state == "triaged":
        entry.update(flag=bool(flag), score=round(score, 4), model=model)
    if reason:
        entry["reason"] = reason
    return entry

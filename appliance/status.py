"""What ``appliance status --json`` reports: counts and the state of every series."""

from __future__ import annotations

from typing import Any

import sqlite_utils


def collect_status(db: sqlite_utils.Database) -> dict[str, Any]:
    """Read the current state from the database (no writes)."""
    conn = db.conn
    instances = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    without_series = conn.execute(
        "SELECT COUNT(*) FROM instances WHERE series_instance_uid = ''"
    ).fetchone()[0]
    jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    series = [
        {
            "study_instance_uid": row[0],
            "series_instance_uid": row[1],
            "modality": row[2],
            "instances": row[3],
            "state": row[4],
            **({"reason": row[5]} if row[5] else {}),
        }
        for row in conn.execute(
            "SELECT study_instance_uid, series_instance_uid, modality, instances, state, reason "
            "FROM series ORDER BY first_received_at"
        )
    ]
    return {
        "instances_received": instances,
        # Stored as sent but never triaged: the sender left out the Series Instance UID.
        "instances_without_series": without_series,
        "jobs": jobs,
        "series": series,
    }

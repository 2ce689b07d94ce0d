"""Episodes in the audit log, and the kinds of event that are alerts.

A condition a person must hear of (the disk below its floor, the hub out of reach, the hub
finding the audit chain does not match its anchor) opens with one alert event and closes
with one event saying it is over, so each episode alerts once however often it is checked.
:mod:`appliance.send.alerts` sends every event of :data:`ALERT_KINDS` to syslog and the
webhook.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.audit.chain import append_in

#: The data folder's free space fell below the floor / is back above it.
DISK_LOW, DISK_OK = "alert-disk-below-floor", "disk-above-floor"
#: No sync round has reached the hub for ``sync.alert_after_s`` / a round reached it again.
SYNC_FAILING, SYNC_BACK = "alert-sync-failing", "sync-reached-again"
#: The hub found the audit chain does not match its anchor / it agrees again (cleared there).
AUDIT_DISAGREES, AUDIT_AGREES = "alert-audit-disagrees", "audit-agrees-again"

#: Every audit kind that is an alert: a flagged result that could not be delivered, a drift
#: alert, ``alert-worker-hung`` (the supervisor of ``appliance serve`` killed a worker whose
#: heartbeat stopped), and the episodes above.
ALERT_KINDS = (
    "alert-result-dead-lettered",
    "drift-alert",
    DISK_LOW,
    "alert-worker-hung",
    SYNC_FAILING,
    AUDIT_DISAGREES,
)


def is_open(conn: sqlite3.Connection, opened: str, closed: str) -> bool:
    """Whether the newest of the episode's two events is the one that opens it."""
    last = conn.execute(
        "SELECT kind FROM audit_log WHERE kind IN (?, ?) ORDER BY seq DESC LIMIT 1", (opened, closed)
    ).fetchone()
    return last is not None and last[0] == opened


def observe(
    conn: sqlite3.Connection,
    opened: str,
    closed: str,
    condition: dict[str, Any] | None,
    cleared: dict[str, Any] | None = None,
) -> str | None:
    """Record what was just seen of an episode, inside the caller's write transaction:
    ``condition`` (the opening event's payload) when the condition holds, ``None`` when it
    does not. Appends ``opened`` when it starts, ``closed`` (with ``cleared``) when it ends,
    nothing while it stays as it was; returns the kind appended, if any."""
    now_open = is_open(conn, opened, closed)
    if condition is not None and not now_open:
        append_in(conn, opened, condition)
        return opened
    if condition is None and now_open:
        append_in(conn, closed, cleared or {})
        return closed
    return None

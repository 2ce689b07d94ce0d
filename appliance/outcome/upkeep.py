"""The scheduled work the worker owns, so that reading never writes.

The tasks, each run when its period has passed (between jobs, by the worker's loop):

- ``study-summary``: :func:`appliance.outcome.studies.refresh`, the worklist's per-study
  summary and the header fields of new studies;
- ``drift-windows``: :func:`appliance.drift.service.evaluate_due`, which closes every drift
  window that ended before today (alerts raised or cleared, audited);
- ``retention``: :func:`appliance.outcome.retention.purge`, which deletes the pixel data
  of delivered series older than ``retention.pixel_days`` (when retention settings are given);
- ``alerts``: :meth:`appliance.send.alerts.Alerts.run`, which tells syslog and the webhook
  of new alert events (when an :class:`~appliance.send.alerts.Alerts` is given).

Each run is recorded in the ``upkeep`` table (this module is its one writer), so the
worklist, the drift page and ``appliance drift status`` can say how old their figures
are (:func:`last_ran`) instead of computing them on a read.
"""

from __future__ import annotations

import logging
import sqlite3

import sqlite_utils

from appliance.config import DriftSettings, RetentionSettings
from appliance.db import transaction
from appliance.drift.service import day_of, evaluate_due
from appliance.outcome import retention, studies
from appliance.send.alerts import Alerts

LOG = logging.getLogger(__name__)
STUDY_SUMMARY = "study-summary"
DRIFT_WINDOWS = "drift-windows"
RETENTION = "retention"
ALERTS = "alerts"


class Upkeep:
    """Runs the tasks that are due on one database connection.

    Parameters
    ----------
    summary_every_s, drift_every_s : float
        The tasks' periods (``worker.summary_interval_s``, ``worker.drift_interval_s``).
        A new Upkeep runs every task at its first call.
    retention : RetentionSettings, optional
        ``[retention]``; retention runs every ``interval_s`` when given.
    alerts : Alerts, optional
        Runs every ``alerts.settings.interval_s`` when given.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        drift: DriftSettings,
        summary_every_s: float,
        drift_every_s: float,
        retention: RetentionSettings | None = None,
        alerts: Alerts | None = None,
    ):
        self.db = db
        self.drift = drift
        self.retention = retention
        self.periods = {STUDY_SUMMARY: summary_every_s, DRIFT_WINDOWS: drift_every_s}
        self.alerts = alerts
        if retention is not None:
            self.periods[RETENTION] = retention.interval_s
        if alerts is not None:
            self.periods[ALERTS] = alerts.settings.interval_s
        self._last: dict[str, float] = {}

    def run_due(self, now: float) -> list[str]:
        """Run each task whose period has passed since it last ran here; return their names."""
        due = [task for task, every in self.periods.items() if now - self._last.get(task, -float("inf")) >= every]
        for task in due:
            self._run(task, now)
            self._last[task] = now
        return due

    def _run(self, task: str, now: float) -> None:
        conn = self.db.conn
        if task == STUDY_SUMMARY:
            studies.refresh(conn)
            with transaction(conn):
                _ran(conn, task, now)
        elif task == RETENTION:
            assert self.retention is not None
            retention.purge(conn, self.retention, now)
            with transaction(conn):
                _ran(conn, task, now)
        elif task == ALERTS:
            assert self.alerts is not None
            self.alerts.run(conn, now)
            with transaction(conn):
                _ran(conn, task, now)
        else:
            with transaction(conn):
                closed = evaluate_due(conn, self.drift, day_of(now))
                _ran(conn, task, now)
            if closed:
                LOG.info("closed %d drift window(s)", closed)


def _ran(conn: sqlite3.Connection, task: str, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO upkeep (task, ran_at) VALUES (?, ?)", (task, now))


def last_ran(conn: sqlite3.Connection, task: str) -> float | None:
    """When ``task`` last ran (on any worker), or None if it never did."""
    row = conn.execute("SELECT ran_at FROM upkeep WHERE task = ?", (task,)).fetchone()
    return None if row is None else row[0]

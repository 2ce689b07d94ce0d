"""Closed days' drift reports into the outbox on a real SQLite file: today is never
queued, a closed day once per model version, ids stable per box and distinct between boxes."""

from __future__ import annotations

import datetime as dt

import numpy as np

from appliance.config import DriftSettings
from appliance.db import open_database
from appliance.drift.anonymised import daily_report, stable_report_id
from appliance.drift.service import day_of
from appliance.sync import report_queue
from appliance.sync.report_queue import queue_closed_days
from tests.helpers.drift import DAY, record_days

NOW = dt.datetime(2026, 3, 20, 15, tzinfo=dt.timezone.utc).timestamp()
SETTINGS = DriftSettings(k=2, min_series=1000)


def test_each_closed_day_is_queued_once_per_model_version(tmp_path):
    path = tmp_path / "a.db"
    record_days(path, SETTINGS, "1.0.0", range(0, 3), per_day=4, now=NOW)
    record_days(path, SETTINGS, "2.0.0", range(1, 2), per_day=3, job0=100, now=NOW, model_id="chest")
    conn = open_database(path).conn
    today = day_of(NOW)

    queued = queue_closed_days(conn, SETTINGS, "device-a", today, rng=np.random.default_rng(1), now=NOW)
    days = [today - dt.timedelta(days=n) for n in (2, 1)]
    expected = [stable_report_id("device-a", days[0], "head-ct", "1.0.0"),
                stable_report_id("device-a", days[1], "chest", "2.0.0"),
                stable_report_id("device-a", days[1], "head-ct", "1.0.0")]
    assert queued == expected  # oldest day first; today (still open) is not among them
    assert queue_closed_days(conn, SETTINGS, "device-a", today, now=NOW) == []

    held = {r.report_id: r.report for r in report_queue.pending(conn, 10)}
    assert list(held) == expected
    report = held[expected[2]]
    assert report["day"] == days[1].isoformat()
    assert report == daily_report(conn, SETTINGS, days[1], model=("head-ct", "1.0.0"), report_id=expected[2])
    assert report["models"][0]["series"] == 4 and report["models"][0]["not_analysed"] == {"decode-failed": None}

    # The next day: yesterday's series (today's, above) now form a closed day of their own.
    tomorrow = day_of(NOW + DAY)
    assert queue_closed_days(conn, SETTINGS, "device-a", tomorrow, now=NOW + DAY) == [
        stable_report_id("device-a", today, "head-ct", "1.0.0")]
    # Another box's reports of the same day and model version have other ids.
    assert stable_report_id("device-b", days[1], "head-ct", "1.0.0") not in held

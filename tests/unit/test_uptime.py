"""The listener's uptime (issue 23): spans recorded on a real SQLite file with a clock the
test moves, and the compliance report's downtime read from them, to within one beat."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.compliance import as_text, compliance_report
from appliance.db import open_database
from appliance.uptime import Span, UptimeRecorder, availability, spans

DAY = dt.date(2026, 11, 2)
T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
HOUR = 3600.0


def run_for(conn, clock: list[float], start: float, end: float, stopped: bool, every_s: float = 60.0) -> None:
    """A process up from ``start``, beating every ``every_s`` up to ``end``; stopped cleanly
    there, or gone without a word (a crash)."""
    clock[0] = start
    recorder = UptimeRecorder(conn, "serve", clock=lambda: clock[0], every_s=every_s)
    recorder.begin()
    while clock[0] + every_s <= end:
        clock[0] += every_s
        recorder.beat()
    if stopped:
        clock[0] = end
        recorder.beat(stopped=True)


def test_a_clean_restart_and_a_crash_are_downtime_to_within_a_beat(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    clock = [0.0]
    run_for(db.conn, clock, T0 + 1 * HOUR, T0 + 5 * HOUR, stopped=True)  # stopped for an upgrade...
    run_for(db.conn, clock, T0 + 5 * HOUR + 120, T0 + 9 * HOUR, stopped=False)  # ...back 2 min later; crashed at 9 h
    run_for(db.conn, clock, T0 + 11 * HOUR, T0 + 30 * HOUR, stopped=False)  # restarted at 11 h, running past the day
    recorded = spans(db.conn)
    assert [s.stopped for s in recorded] == [True, False, False]

    found = availability(recorded, T0, T0 + 24 * HOUR, now=T0 + 30 * HOUR)
    assert found.measured_from == T0 + HOUR  # not installed before its first span
    assert found.measured_s == 23 * HOUR
    # 2 min for the upgrade; the crash between the last beat (9 h) and the next (9 h 1 min)
    # counts as up to 9 h 1 min, so 2 h - 60 s down
    assert found.down_s == pytest.approx(120 + 2 * HOUR - 60)
    assert found.outages == ((T0 + 9 * HOUR + 60, T0 + 11 * HOUR),)  # the 2 min gap is under the 5 min listed
    assert found.share_up == pytest.approx(1 - found.down_s / (23 * HOUR))

    text = as_text(compliance_report(db, DAY, DAY, now=T0 + 30 * HOUR))
    assert ("Downtime of the DICOM listener: 2 h 01 min of 23 h 00 min measured from 2026-11-02T01:00:00+00:00 "
            "(up 91.2 %; to within 1 min 00 s)") in text
    assert "  down 2026-11-02T09:01:00+00:00 to 2026-11-02T11:00:00+00:00 (1 h 59 min)" in text


def test_a_period_before_the_box_ran_is_not_measured_and_the_running_span_reaches_now():
    running = [Span(T0, T0 + 600, stopped=False, every_s=60)]
    assert availability(running, T0 - 2 * 86400, T0 - 86400, now=T0 + 630).measured_from is None
    now = availability(running, T0, T0 + 86400, now=T0 + 630)  # last beat 30 s ago: up to now
    assert (now.measured_s, now.down_s) == (630, 0)
    assert availability([], T0, T0 + 86400, now=T0).share_up is None


def test_no_span_in_the_period_says_so(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    text = as_text(compliance_report(db, DAY, DAY, now=T0 + 86400))
    assert "Downtime: not measured (the DICOM listener did not run in the period)" in text

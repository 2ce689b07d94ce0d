"""The drift store and service on a real SQLite file: windows close day by day, alerts and
clears are audit events, status and gauges show them, the daily report is anonymised."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from appliance.audit.chain import verify_database
from appliance.config import DriftSettings
from appliance.db import open_database, transaction
from appliance.drift import tables
from appliance.drift.aggregate import Aggregate
from appliance.drift.anonymised import anonymise, daily_report
from appliance.drift.service import alert_summary, day_of, drift_status, evaluate_due, gauges, record_series
from appliance.errors import ReportError
from appliance.outcome.upkeep import DRIFT_WINDOWS, STUDY_SUMMARY, Upkeep
from appliance.status import collect_status
from tests.helpers.drift import REFERENCE_STYLE, UNSEEN_STYLE, series_record

DAY0 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.timezone.utc).timestamp()
SETTINGS = DriftSettings(min_series=40)


def _feed(db, rng, days: range, style, per_day: int, job0: int) -> int:
    """Series recorded as the outcome stage records them, and each day the worker's
    scheduled upkeep, which closes the windows that ended."""
    upkeep = Upkeep(db, SETTINGS, summary_every_s=3600, drift_every_s=3600)
    job = job0
    for day in days:
        for i in range(per_day):
            r = series_record(style, rng)
            with transaction(db.conn) as conn:
                record_series(conn, job_id=job, model_id="head-ct", model_version="1.0.0",
                              features=r["features"], score=r["score"], flag=r["flag"],
                              now=DAY0 + day * 86400 + i)
            job += 1
        with transaction(db.conn) as conn:
            record_series(conn, job_id=job, model_id="head-ct", model_version="1.0.0", features=None,
                          failure=f"decode failed: 1.2.826.0.1.3680043.2.99.{job}.dcm: broken",
                          now=DAY0 + day * 86400 + 3600)
        job += 1
        assert upkeep.run_due(DAY0 + day * 86400 + 7200) == [STUDY_SUMMARY, DRIFT_WINDOWS]
    return job


def test_windows_alert_and_clear_as_audit_events(tmp_path):
    db = open_database(tmp_path / "a.db")
    rng = np.random.default_rng(5)
    job = _feed(db, rng, range(0, 12), REFERENCE_STYLE, 8, 1)
    assert not alert_summary(db.conn)["alerts"]
    job = _feed(db, rng, range(12, 16), UNSEEN_STYLE, 8, job)
    # The worker's upkeep on day 16 closes day 15's window.
    job = _feed(db, rng, range(16, 17), REFERENCE_STYLE, 1, job)
    summary = alert_summary(db.conn)
    assert summary["active_alerts"] >= 1
    features = {a["feature"] for a in summary["alerts"]}
    assert "kernel" in features and "manufacturer_model" in features
    kinds = [k for (k,) in db.conn.execute("SELECT kind FROM audit_log")]
    assert kinds.count("drift-alert") == summary["active_alerts"]
    assert collect_status(db)["drift"]["active_alerts"] == summary["active_alerts"]
    names = {(n, tuple(sorted(labels.items()))) for n, labels, _ in gauges(db.conn)}
    assert ("triage_drift_active_alerts", ()) in names
    assert any(n == "triage_drift_statistic" and dict(lab)["feature"] == "kernel" for n, lab in names)

    # Back to the reference style: after the window holds none of the unseen days and
    # three clean evaluations, every alert clears.
    job = _feed(db, rng, range(17, 30), REFERENCE_STYLE, 8, job)
    assert alert_summary(db.conn)["active_alerts"] == 0
    assert kinds.count("drift-alert") == [k for (k,) in db.conn.execute("SELECT kind FROM audit_log")].count(
        "drift-clear")
    assert verify_database(db) == []

    status = drift_status(db.conn, SETTINGS, dt.date(2026, 3, 30))
    [model] = status["models"]
    assert model["window"]["series"] == 8 * 7 and model["window"]["not_analysed"] == {"decode-failed": 7}
    assert model["features"]["kernel"]["counts"] == {"FC23": 56}
    assert model["features"]["hu"]["statistic"] == "js_distance"


def test_evaluate_due_is_idempotent_and_skips_thin_windows(tmp_path):
    db = open_database(tmp_path / "a.db")
    _feed(db, np.random.default_rng(1), range(0, 3), REFERENCE_STYLE, 3, 1)
    with transaction(db.conn) as conn:
        assert evaluate_due(conn, SETTINGS, dt.date(2026, 3, 10)) == 7  # days 3..9 closed, nothing judged
        assert evaluate_due(conn, SETTINGS, dt.date(2026, 3, 10)) == 0
    assert tables.evaluations(db.conn, "head-ct", "1.0.0") == []


def test_daily_report_suppresses_small_cells_and_holds_no_failure_text(tmp_path):
    db = open_database(tmp_path / "a.db")
    _feed(db, np.random.default_rng(2), range(0, 1), REFERENCE_STYLE, 12, 1)
    report = daily_report(db.conn, SETTINGS, day_of(DAY0))
    text = json.dumps(report)
    assert "1.2.826" not in text and "decode failed" not in text
    [m] = report["models"]
    assert m["series"] == 12 and m["not_analysed"] == {"decode-failed": None}
    assert m["features"]["kernel"]["counts"] == {"FC23": 12}
    assert m["features"]["body_part"]["counts"] == {"HEAD": 12}
    assert daily_report(db.conn, SETTINGS, day_of(DAY0) + dt.timedelta(days=1))["models"] == []


def test_anonymise_by_hand_and_with_noise():
    agg = Aggregate("ct_slice", 25, 3, {"timed-out": 10},
                    {"score": np.array([1, 9, 10, 5, 0] + [0] * 15, np.int64)},
                    {"kernel": {"FC23": 24, "B70f": 1}})
    r = anonymise(dt.date(2026, 3, 1), [("head-ct", "1.0.0", agg)], 10, 0.0, np.random.default_rng(0), "a" * 12 + "4" + "b" * 3 + "8" + "c" * 15)
    m = r["models"][0]
    assert (m["series"], m["flagged"], m["not_analysed"]) == (25, None, {"timed-out": 10})
    assert m["features"]["score"]["counts"][:5] == [None, None, 10, None, None]
    assert m["features"]["kernel"]["counts"] == {"FC23": 24}
    noisy = [anonymise(dt.date(2026, 3, 1), [("head-ct", "1.0.0", agg)], 10, 0.5, np.random.default_rng(s),
                       "a" * 12 + "4" + "b" * 3 + "8" + "c" * 15)["models"][0]["series"] for s in range(200)]
    shown = [v for v in noisy if v is not None]
    assert all(v >= 10 for v in shown) and len(set(shown)) > 3
    assert abs(np.mean(shown) - 25) < 1.0
    with pytest.raises(ReportError):
        anonymise(dt.date(2026, 3, 1), [("head ct/../x", "1.0.0", agg)], 10, 0.0, np.random.default_rng(0),
                  "a" * 12 + "4" + "b" * 3 + "8" + "c" * 15)


def test_a_day_with_fewer_than_k_series_shows_no_distribution_at_all():
    """A pixel histogram counts pixels: two series can fill a bin past k. Fewer than k
    series on a day, and every cell of that model version is suppressed."""
    two_series = Aggregate("ct_slice", 2, 1, {}, {"hu": np.array([0, 259, 2297] + [0] * 81, np.int64)},
                           {"kernel": {"FC23": 2}})
    r = anonymise(dt.date(2026, 3, 1), [("head-ct", "1.0.0", two_series)], 10, 0.0, np.random.default_rng(0),
                  "a" * 12 + "4" + "b" * 3 + "8" + "c" * 15)
    m = r["models"][0]
    assert m["series"] is None and m["flagged"] is None
    assert set(m["features"]["hu"]["counts"]) == {None}
    assert m["features"]["kernel"]["counts"] == {}


def test_a_category_seen_in_fewer_than_k_series_leaves_no_trace():
    """Issue 24, D1-labels. Before: the labels stayed in the report with null counts
    (``{"DOE JOHN MRN 4455667": null}``), and the hub stored and showed them."""
    agg = Aggregate("ct_slice", 30, 12, {}, {}, {
        "manufacturer": {"ACME": 29, "DOE JOHN MRN 4455667": 1},
        "manufacturer_model": {"ACME Scan 64": 29, "PATIENT 19700101": 1},
        "kernel": {"FC23": 29, "Mobile Unit 7": 1},
    })
    reports = [anonymise(dt.date(2026, 3, 1), [("head-ct", "1.0.0", agg)], 10, epsilon,
                         np.random.default_rng(seed), "a" * 12 + "4" + "b" * 3 + "8" + "c" * 15)
               for epsilon, seed in [(0.0, 0)] + [(0.1, s) for s in range(50)]]
    for report in reports:
        text = json.dumps(report)
        assert not any(label in text for label in ("DOE JOHN", "PATIENT 19700101", "Mobile Unit 7"))
    assert reports[0]["models"][0]["features"]["kernel"]["counts"] == {"FC23": 29}


def test_plots_show_reference_current_and_statistic_over_time(tmp_path):
    from appliance.drift.plot import write_plots

    db = open_database(tmp_path / "a.db")
    _feed(db, np.random.default_rng(4), range(0, 8), REFERENCE_STYLE, 6, 1)
    paths = write_plots(db.conn, SETTINGS, tmp_path / "png", dt.date(2026, 3, 8))
    names = {p.name for p in paths}
    assert {"head-ct-1.0.0-hu-histogram.png", "head-ct-1.0.0-kernel-categories.png",
            "head-ct-1.0.0-kernel-statistic.png", "head-ct-1.0.0-hu-statistic.png"} <= names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)

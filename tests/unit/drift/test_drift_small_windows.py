"""Issue 26: a window under its minimum series count is not judged (status says how far it
is, not a verdict), and a window smaller than the reference's sub-windows gets a wider
package threshold, by the square root of the ratio, and says so."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from appliance.config import DriftSettings
from appliance.db import open_database, transaction
from appliance.drift.aggregate import aggregate
from appliance.drift import tables
from appliance.drift.monitor import MonitorState, evaluate, widening
from appliance.drift.service import day_of, drift_status, record_series
from tests.helpers.drift import REFERENCE_STYLE, UNSEEN_STYLE, package_reference, series_record


def test_widening_is_the_square_root_of_the_ratio_below_the_calibrated_size():
    assert widening(75, 150) == pytest.approx(math.sqrt(2))
    assert widening(150, 150) == widening(400, 150) == 1.0
    assert widening(0, 150) == 1.0


def judged_at_60_and_150(seed: int, package_thresholds: bool = True) -> tuple[dict, dict]:
    """Windows of 60 and 150 series of the reference style judged against a package
    reference (with or without its thresholds) under ``min_series`` 60, by feature."""
    rng = np.random.default_rng(seed)
    reference = package_reference(rng, series=200)
    if not package_thresholds:
        reference = {**reference, "thresholds": {}}
    settings = DriftSettings(min_series=60)
    small = aggregate(series_record(REFERENCE_STYLE, rng) for _ in range(60))
    large = aggregate(series_record(REFERENCE_STYLE, rng) for _ in range(150))
    return ({e.feature: e for e in evaluate(small, reference, None, settings)},
            {e.feature: e for e in evaluate(large, reference, None, settings)})


def test_a_small_window_widens_the_package_thresholds_and_says_by_how_much():
    wide, narrow = judged_at_60_and_150(seed=3)
    for name in ("hu", "slice_count", "slice_thickness_mm"):
        assert wide[name].source == narrow[name].source == "package"
        assert wide[name].threshold == pytest.approx(narrow[name].threshold * math.sqrt(150 / 60))
        assert wide[name].details["widened"] == pytest.approx(math.sqrt(150 / 60))
        assert wide[name].details["calibrated_series"] == 150
        assert "widened" not in narrow[name].details
        assert not wide[name].exceeded  # the reference style is no drift, in a small window too


def test_a_thin_window_shows_its_statistics_but_no_verdict(tmp_path):
    db = open_database(tmp_path / "a.db")
    rng = np.random.default_rng(9)
    now = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC).timestamp()
    baseline = aggregate(series_record(REFERENCE_STYLE, rng) for _ in range(150))
    with transaction(db.conn) as conn:  # an earlier judged window left its baseline
        tables.save_monitor(conn, "head-ct", "1.0.0", dt.date(2026, 2, 28), MonitorState(baseline))
    for job in (1, 2):  # an unseen scanner: far from anything, but two series prove nothing
        r = series_record(UNSEEN_STYLE, rng)
        with transaction(db.conn) as conn:
            record_series(conn, job_id=job, model_id="head-ct", model_version="1.0.0", features=r["features"],
                          score=r["score"], flag=r["flag"], now=now + job)
    [model] = drift_status(db.conn, DriftSettings(), day_of(now))["models"]
    assert model["window"]["judged"] is False and model["window"]["series"] == 2
    judged = {name: f for name, f in model["features"].items() if "statistic" in f}
    assert judged, "the thin window's statistics are still shown"
    beyond = [n for n, f in judged.items() if (f["value"] < f["threshold"]) == (f["statistic"] == "chi_square_p")]
    assert beyond, "some statistic is past its threshold: the case the page must not call a finding"
    assert all(f["exceeded"] is None for f in judged.values())


def test_a_histogram_picture_is_fitted_to_the_bins_its_data_fill():
    from appliance.drift.plot import occupied_range

    edges = np.linspace(0, 65000, 66)  # columns: 0 to 65000 in bins of 1000
    reference, current = np.zeros(65), np.zeros(65)
    reference[0] = current[0] = 5  # 512 columns
    current[1] = 1  # a 1024-column series
    assert occupied_range(edges, reference, current) == (0.0, 3000.0)
    assert occupied_range(edges, np.zeros(65)) == (0.0, 65000.0)


def test_a_small_window_widens_the_configured_distance_too():
    """Without package thresholds the configured distance judges: it counts as set for
    windows of 150 series, so a window of 60 has it widened by the same square root."""
    wide, narrow = judged_at_60_and_150(seed=4, package_thresholds=False)
    settings = DriftSettings(min_series=60)
    for name in ("hu", "slice_count", "slice_thickness_mm"):
        assert wide[name].source == narrow[name].source == "config"
        assert narrow[name].threshold == settings.fallback_js_distance and "widened" not in narrow[name].details
        assert wide[name].threshold == pytest.approx(settings.fallback_js_distance * math.sqrt(150 / 60))
        assert wide[name].details["calibrated_series"] == 150


def test_a_threshold_widened_past_what_a_distance_can_be_is_said_to_be_unable_to_alert():
    from appliance.cli.commands.drift import _source

    rng = np.random.default_rng(5)
    bare = {**package_reference(rng, series=200), "thresholds": {}}
    settings = DriftSettings(min_series=1)
    one = {e.feature: e for e in evaluate(aggregate([series_record(REFERENCE_STYLE, rng)]), bare, None, settings)}
    hu = one["hu"]
    assert hu.threshold == pytest.approx(settings.fallback_js_distance * math.sqrt(150)) and hu.threshold > 1
    assert hu.details["unreachable"] is True and not hu.exceeded
    said = _source({"threshold_source": hu.source, "details": hu.details})
    assert said == ("config, widened x12.25: set for 150 series; a distance is at most 1, so it cannot alert in a "
                    "window this small")
    two_hundred = aggregate(series_record(REFERENCE_STYLE, rng) for _ in range(200))
    assert "unreachable" not in {e.feature: e for e in evaluate(two_hundred, bare, None, settings)}["hu"].details

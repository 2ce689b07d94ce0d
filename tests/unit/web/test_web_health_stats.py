"""Ingest and inference rates, time to result and the oldest pending series over a fixed clock."""

from __future__ import annotations

import pytest

from appliance.db import open_database
from appliance.web.health_stats import oldest_pending, percentile, windows

NOW = 1_000_000.0


def _series(conn, uid: str, state: str, first: float, last: float, modality: str = "CT") -> None:
    conn.execute("INSERT INTO series (series_instance_uid, study_instance_uid, modality, state, first_received_at,"
                 " last_received_at, updated_at) VALUES (?, 'study', ?, ?, ?, ?, ?)",
                 (uid, modality, state, first, last, last))


def _instance(conn, uid: str, at: float) -> None:
    conn.execute("INSERT INTO instances VALUES (?, 'study', 's', 'c', 't', 1, 'h', 'p', 'AE', 'a', ?)", (uid, at))


def _result(conn, series: str, at: float, role: str = "active") -> None:
    conn.execute("INSERT INTO inference_results (job_id, role, series_instance_uid, study_instance_uid, generation,"
                 " model_id, model_version, score, threshold, flag, audit_seq, created_at)"
                 " VALUES (?, ?, ?, 'study', 1, 'm', '1', 0.5, 0.5, 0, 0, ?)",
                 (abs(hash((series, role))) % 10**9, role, series, at))


@pytest.fixture
def conn(tmp_path):
    return open_database(tmp_path / "appliance.db").conn


def test_percentile_is_nearest_rank_and_none_when_empty():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0


def test_windows_count_ingest_and_inference_and_time_to_result_per_window(conn):
    for n, ago in enumerate((10, 1800, 3599, 3601, 40_000, 86_401)):
        _instance(conn, f"i{n}", NOW - ago)
    # results in the last hour take 10 s and 30 s; one earlier in the day takes 300 s
    for uid, last, result in (("a", NOW - 100, NOW - 90), ("b", NOW - 200, NOW - 170),
                              ("c", NOW - 20_300, NOW - 20_000), ("old", NOW - 90_000, NOW - 89_000)):
        _series(conn, uid, "done", last - 5, last)
        _result(conn, uid, result)
    _result(conn, "a", NOW - 80, role="shadow")  # shadow results are not what PACS waits for
    hour, day = windows(conn, NOW)
    assert (hour.label, hour.instances, hour.analysed) == ("last hour", 3, 2)
    assert (hour.to_result_p50, hour.to_result_p95) == (10.0, 30.0)
    assert hour.instances_per_hour == 3.0
    assert (day.instances, day.analysed) == (5, 3)
    assert (day.to_result_p50, day.to_result_p95) == (30.0, 300.0)
    assert day.analysed_per_hour == pytest.approx(3 / 24)
    assert day.covered_s == 86_400  # the first image is older than the day
    later = windows(conn, NOW + 7200)[0]
    assert (later.instances, later.analysed, later.to_result_p50) == (0, 0, None)


def test_oldest_pending_is_the_first_arrival_still_waiting(conn):
    assert oldest_pending(conn, NOW) is None
    _series(conn, "done", "done", NOW - 9000, NOW - 8000)
    _series(conn, "queued", "queued", NOW - 600, NOW - 500, modality="MR")
    _series(conn, "receiving", "receiving", NOW - 60, NOW - 1)
    pending = oldest_pending(conn, NOW)
    assert (pending.state, pending.modality, pending.waited_s) == ("queued", "MR", 600.0)


def test_a_box_younger_than_a_window_spreads_its_rate_over_its_age_not_the_window(conn):
    for n in range(6):
        _instance(conn, f"young{n}", NOW - 60 * n)  # the first image 5 minutes ago
    hour, day = windows(conn, NOW)
    assert day.covered_s == 3600 and day.instances_per_hour == 6.0  # not 6 / 24
    assert hour.covered_s == 3600 and hour.instances_per_hour == 6.0
    two_hours_on = windows(conn, NOW + 7200 - 300)[1]
    assert two_hours_on.covered_s == pytest.approx(7200) and two_hours_on.instances_per_hour == pytest.approx(3.0)

"""The daily report's field evidence on a real SQLite file: per role of a model version,
the day's counts, the 2x2 of shadow and active flags and the radiologists' verdicts to
date, every cell under k null, and to-date counts that move only in steps of k."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from appliance.config import DriftSettings
from appliance.db import open_database
from appliance.drift.anonymised import _role_entry, complement
from appliance.drift.evidence import RoleEvidence, ratchet, score_counts, truth
from appliance.drift.schema import SCHEMA
from appliance.drift.service import day_of
from appliance.states import ModelState
from appliance.sync import report_queue
from appliance.sync.report_queue import queue_closed_days
from tests.helpers.field import Case, record_cases

K = 10
SETTINGS = DriftSettings(k=K, min_series=1000)
DAY1 = dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC).timestamp()
DAY_S = 86400.0

# Day 1: 12 flagged by both (11 agreed), 3 by the shadow only (2 a missed finding), 2 by the
# active only (both false positives), 23 by neither, and 11 the shadow timed out on; five
# of them waited 200 s for their result, the others 20 s.
DAY1_CASES = (
    [Case(0.9, 0.8, 200.0 if i < 5 else 20.0, "agree" if i < 11 else None) for i in range(12)]
    + [Case(0.2, 0.7, 20.0, "missed-finding" if i < 2 else None) for i in range(3)]
    + [Case(0.7, 0.3, 20.0, "false-positive") for _ in range(2)]
    + [Case(0.1, 0.1, 20.0) for _ in range(23)]
    + [Case(0.1, "error", 20.0) for _ in range(11)]
)
# Day 2: 10 more agreed flags by both, 5 more by neither.
DAY2_CASES = [Case(0.9, 0.9, 20.0, "agree") for _ in range(10)] + [Case(0.1, 0.2, 20.0) for _ in range(5)]


def test_pure_rules():
    assert score_counts([0.0, 0.05, 0.1, 0.99, 1.0]) == (2, 1, 0, 0, 0, 0, 0, 0, 0, 2)
    assert [truth("agree", True), truth("agree", False), truth("false-positive", True),
            truth("missed-finding", False), truth("image-problem", True)] == [True, False, False, True, None]
    assert ratchet(9, None, K) is None and ratchet(10, None, K) == 10
    assert ratchet(19, 10, K) == 10 and ratchet(20, 10, K) == 20 and ratchet(25, None, K) == 25


def _reports(path) -> dict[tuple[str, str], dict]:
    conn = open_database(path).conn
    today = day_of(DAY1 + 2 * DAY_S)
    queue_closed_days(conn, SETTINGS, "device-a", today, rng=np.random.default_rng(0), now=DAY1 + 2 * DAY_S)
    return {(r.report["day"], r.report["models"][0]["model_version"]): r.report
            for r in report_queue.pending(conn, 100)}


def test_each_role_reports_its_day_and_its_evidence_to_date(tmp_path):
    path = tmp_path / "box.db"
    job = record_cases(path, DAY1_CASES, at=DAY1, job0=1)
    record_cases(path, DAY2_CASES, at=DAY1 + DAY_S, job0=job)
    reports = _reports(path)
    day1, day2 = "2026-11-20", "2026-11-21"
    assert set(reports) == {(day1, "1.0.0"), (day1, "1.1.0"), (day2, "1.0.0"), (day2, "1.1.0")}
    assert all(r["schema"] == SCHEMA for r in reports.values())

    active = reports[(day1, "1.0.0")]["models"][0]["field"]
    assert list(active) == ["active"]
    a = active["active"]
    assert (a["first_day"], a["scored"], a["flagged"], a["not_analysed"]) == (day1, 51, 14, {})
    # 34 scores of 0.1 and 12 of 0.9 shown; 3 of 0.2 and 2 of 0.7 under k.
    assert a["score_histogram"]["counts"] == [None, 34, None, None, None, None, None, None, None, 12]
    assert a["time_to_result_s"] == {"p50": 20.0, "p95": 200.0}
    assert a["agreement"] is None
    # 11 agreed flags; the 2 false positives and the 2 missed findings are under k.
    assert a["feedback"] == {"flag_agreed": 11, "flag_disagreed": None, "missed_finding": None}

    shadow_entry = reports[(day1, "1.1.0")]["models"][0]
    assert (shadow_entry["series"], shadow_entry["flagged"], shadow_entry["features"]) == (None, None, {})
    s = shadow_entry["field"]["shadow"]
    assert (s["first_day"], s["scored"], s["flagged"], s["not_analysed"]) == (day1, 40, 15, {"timed-out": 11})
    assert s["time_to_result_s"] == {"p50": 21.0, "p95": 201.0}
    assert s["agreement"] == {"both": 12, "shadow_only": None, "active_only": None, "neither": 23}
    # The shadow judged by the verdicts on the active results: 11 agreed flags and the 2
    # missed findings it flagged make 13; the 2 false positives it did not flag.
    assert s["feedback"] == {"flag_agreed": 13, "flag_disagreed": None, "missed_finding": None}

    # Day 2: to-date counts move on only in steps of at least k.
    s2 = reports[(day2, "1.1.0")]["models"][0]["field"]["shadow"]
    assert (s2["first_day"], s2["scored"], s2["flagged"]) == (day1, 15, 10)
    assert s2["agreement"] == {"both": 22, "shadow_only": None, "active_only": None, "neither": 23}  # 28 true
    assert s2["feedback"]["flag_agreed"] == 23
    assert reports[(day2, "1.0.0")]["models"][0]["field"]["active"]["feedback"]["flag_agreed"] == 21

    # Nothing that names a patient, a series or a reader leaves.
    text = json.dumps(list(reports.values()))
    assert "2.25." not in text and "dr-a" not in text and "timed out after" not in text


def test_a_day_under_k_shows_no_cell(tmp_path):
    path = tmp_path / "box.db"
    record_cases(path, [Case(0.9, 0.9, 20.0, "agree") for _ in range(6)], at=DAY1, job0=1)
    reports = _reports(path)
    s = reports[("2026-11-20", "1.1.0")]["models"][0]["field"]["shadow"]
    assert s["scored"] is None and s["flagged"] is None
    assert s["score_histogram"]["counts"] == [None] * 10
    assert s["time_to_result_s"] == {"p50": None, "p95": None}
    assert set(s["agreement"].values()) == {None} and set(s["feedback"].values()) == {None}


def test_a_lone_suppressed_cell_cannot_be_had_from_the_published_total():
    """Complementary suppression: cells that add up to a published total with exactly one
    of them null would give it away (the total minus the others), so the smallest shown
    cell is nulled too; two or more nulls, or no published total, are left as they are."""
    assert complement([12, None, 30, 15], 60) == [None, None, 30, 15]
    assert complement([12, None, 30, None], 60) == [12, None, 30, None]
    assert complement([12, None, 30, 15], None) == [12, None, 30, 15]
    assert complement([12, 18, 30], 60) == [12, 18, 30]
    # Through the report: ten score bins of 10-19 results each and one of 3.
    counts = tuple(range(10, 19)) + (3,)
    e = RoleEvidence(ModelState.ACTIVE, dt.date(2026, 11, 20), scored=sum(counts), flagged=40, score_counts=counts)
    entry = _role_entry(e, K, lambda c: c if c >= K else None, None)
    assert entry["scored"] == sum(counts)
    assert entry["score_histogram"]["counts"] == [None, 11, 12, 13, 14, 15, 16, 17, 18, None]

"""The per-study summary: a study's worklist state from its series (pure), and the
worker's upkeep keeping it (and the drift windows) up to date on a schedule."""

from __future__ import annotations

from appliance.states import SeriesState
from appliance.outcome.studies import SeriesRow, summarize

FINDINGS = {"ich 1.0.0": "intracranial haemorrhage"}


def series(uid: str, state: str, *, flag=None, reason=None, model=None, t=100.0, result_at=None, priority=0):
    return SeriesRow(uid, "CT", SeriesState(state), reason, flag, 0.9 if flag else (0.1 if flag == 0 else None), model, t, t + 5,
                     t + 9, priority, result_at)


def test_the_most_urgent_series_decides_the_study_state():
    assert summarize([series("1", "triaged", flag=0, model="ich 1.0.0"),
                      series("2", "triaged", flag=1, model="ich 1.0.0")], FINDINGS).state == "flagged"
    assert summarize([series("1", "triaged", flag=1, model="ich 1.0.0")], FINDINGS).reason == "intracranial haemorrhage"
    failed = summarize([series("1", "triaged", flag=0, model="ich 1.0.0"),
                        series("2", "failed", reason="decode failed")], FINDINGS)
    assert (failed.state, failed.reason) == ("failed", "decode failed")
    pending = summarize([series("1", "triaged", flag=0), series("2", "queued")], FINDINGS)
    assert pending.state == "pending" and pending.time_to_result_s is None
    assert summarize([series("1", "triaged", flag=0), series("2", "not-eligible", reason="localizer")],
                     FINDINGS).state == "not-flagged"
    skipped = summarize([series("1", "not-eligible", reason="modality MR not in ['CT']")], FINDINGS)
    assert (skipped.state, skipped.reason) == ("not-analysed", "modality MR not in ['CT']")


def test_time_to_result_runs_from_the_last_arrival_to_the_last_decision():
    s = summarize([series("1", "triaged", flag=1, model="ich 1.0.0", t=100.0, result_at=107.5),
                   series("2", "not-eligible", reason="x", t=101.0)], FINDINGS)
    # last arrival 106 (101 + 5); decisions at 107.5 (result) and 110 (updated_at of the other)
    assert s.received_at == 100.0 and s.time_to_result_s == 4.0 and s.priority == 0
    assert summarize([series("1", "queued", priority=10)], FINDINGS).priority == 10

"""The outcome stage on a real SQLite file: a decision is recorded in one transaction with
its audit row, its notice (for a claimed series), the outbox rows and nothing else."""

from __future__ import annotations

import json
import pydicom
import pytest
from pydicom.uid import generate_uid

from appliance import jobs, report
from appliance.db import open_database, transaction
from appliance.errors import LeaseLost
from appliance.outcome.decision import Claim, Decision
from appliance.outcome.objects import ObjectWriter
from appliance.outcome.recorder import Recorder
from appliance.receive.index import IngestIndex
from appliance.states import SeriesState
from tests.helpers.boxes import arrived
from tests.helpers.series import ct_dataset

DESTINATIONS = ("PACS@127.0.0.1:104", "ARCHIVE@127.0.0.1:105")
CLAIM = Claim("head CT", "head-ct-ich-demo", ("24725-4", "LN", "Head CT"), None)


@pytest.fixture
def box(tmp_path):
    """A database with one claimed job of a three-slice CT series, and a recorder."""
    db = open_database(tmp_path / "appliance.db")
    study, series = generate_uid(), generate_uid()
    spool = tmp_path / "spool"
    spool.mkdir()
    headers = [store(db, ct_dataset(study, series, i), spool / f"{i}.dcm", 100.0 + i) for i in range(3)]
    with transaction(db.conn) as conn:
        jobs.queue_complete_series(conn, 5, 1, set(), 110.0, lambda facts: 0)
        job = jobs.claim(conn, "worker-1", 300, 3, 111.0)
    writer = ObjectWriter(tmp_path / "results", "2.25", "install-1")
    recorder = Recorder(db, writer, DESTINATIONS, clock=lambda: 120.0)
    return db, job, tuple(headers), recorder


def audit(db) -> list[tuple[str, dict]]:
    return [(kind, json.loads(payload)) for kind, payload in db.conn.execute("SELECT kind, payload FROM audit_log")]


def test_a_series_no_rule_claims_ends_not_eligible_with_the_reason_and_sends_nothing(box):
    db, job, _, recorder = box
    outcome = recorder.record(Decision.not_eligible(job, "modality MR not in ['CT']"))
    assert (outcome.state, outcome.current, outcome.queued) == (SeriesState.NOT_ELIGIBLE, True, ())
    assert db.conn.execute("SELECT state, reason FROM series").fetchone() == ("not-eligible", "modality MR not in ['CT']")
    assert db.conn.execute("SELECT state FROM jobs").fetchone() == ("done",)
    assert audit(db) == [("series-not-eligible", {"job_id": job.id, "series_instance_uid": job.series_instance_uid,
                                                  "reason": "modality MR not in ['CT']"})]
    assert db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    assert db.conn.execute("SELECT COUNT(*) FROM notices").fetchone() == (0,)


def test_a_claimed_series_that_failed_gets_its_notice_queued_for_every_destination(box):
    db, job, headers, recorder = box
    decision = Decision.failed(job, "decode failed: 1.dcm: truncated", CLAIM, headers, report.ANALYSIS_FAILED)
    outcome = recorder.record(decision)
    [notice] = outcome.queued
    assert outcome.state == SeriesState.FAILED and outcome.current
    assert db.conn.execute("SELECT state FROM jobs").fetchone() == ("failed",)
    assert db.conn.execute("SELECT reason_code, reason, sr_instance_uid FROM notices").fetchall() == [
        ("NA-FAILED", "decode failed: 1.dcm: truncated", notice.sop_instance_uid)]
    assert sorted(d for (d,) in db.conn.execute("SELECT destination FROM outbox")) == sorted(DESTINATIONS)
    [(kind, payload)] = audit(db)
    assert kind == "series-failed" and payload["notice_sent"] and payload["notice_reason_code"] == "NA-FAILED"
    sr = pydicom.dcmread(notice.path)
    assert sr.StudyInstanceUID == job.study_instance_uid and sr.Modality == "SR"
    assert notice.sop_instance_uid == report.ResultUids.derive("2.25", "install-1", job.series_instance_uid,
                                                               job.generation).notice_instance_uid


def test_a_decision_for_a_series_that_moved_on_is_recorded_as_superseded_and_sends_nothing(box):
    db, job, headers, recorder = box
    late = ct_dataset(job.study_instance_uid, job.series_instance_uid, 3)
    store(db, late, job.files[0].path.with_name("3.dcm"), 115.0)  # a late instance reopens the series mid-triage
    outcome = recorder.record(Decision.failed(job, "timed out", CLAIM, headers, report.ANALYSIS_TIMED_OUT))
    assert (outcome.current, outcome.queued) == (False, ())
    assert db.conn.execute("SELECT state FROM series").fetchone() == ("receiving",)
    assert db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    [(_, payload)] = audit(db)
    assert payload["notice_sent"] is False


def test_a_worker_that_lost_its_lease_records_nothing(box):
    db, job, headers, recorder = box
    with transaction(db.conn) as conn:
        assert jobs.claim(conn, "worker-2", 300, 3, 412.0) is not None  # worker-1's lease ran out
    with pytest.raises(LeaseLost):
        recorder.record(Decision.failed(job, "timed out", CLAIM, headers, report.ANALYSIS_TIMED_OUT))
    assert audit(db) == [] and db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


def test_a_notice_that_cannot_be_built_leaves_the_series_its_reason(box):
    db, job, _, recorder = box
    outcome = recorder.record(Decision.failed(job, "no header reads", CLAIM, (), report.ANALYSIS_FAILED))
    assert outcome.queued == () and outcome.current
    assert db.conn.execute("SELECT state, reason FROM series").fetchone() == ("failed", "no header reads")
    assert db.conn.execute("SELECT COUNT(*) FROM notices").fetchone() == (0,)


def store(db, ds, path, now: float):
    """Write ``ds`` and index it as the listener would; return its header as read back."""
    ds.save_as(path, enforce_file_format=True)
    IngestIndex(db).record(arrived(ds, path, "CT1", "assoc-1", "Head"), now=now)
    return pydicom.dcmread(path, stop_before_pixels=True)

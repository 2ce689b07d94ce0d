"""The outcome stage with a real model's decision: the result objects and their rows, and a
decision whose result objects cannot be made, which fails the series with the reason and a
notice instead of a silent nothing."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pydicom
import pytest

from appliance import jobs
from appliance.config import load_settings
from appliance.db import transaction
from appliance.parts import Parts
from appliance.receive.index import IngestIndex
from appliance.states import SeriesState
from scripts.harness import free_port
from tests.helpers.boxes import ingest_series


@pytest.fixture
def claimed(tmp_path, quick_packages):
    """The quick head-CT model active, a ten-slice head CT ingested, its job claimed."""
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(quick_packages["public_key"]),
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
        "APPLIANCE_DICOM_PORT": str(free_port()),
    })
    parts = Parts(settings)
    db = parts.database()
    registry = parts.registry(db)
    model = registry.install(quick_packages["head-ct"], "test")
    registry.activate(model.id, model.version, "test")
    index = IngestIndex(db)
    ingest_series(index, settings.spool_dir, 10)
    index.queue_complete_series(0.0, 0.0, now=time.time() + 1)
    with transaction(db.conn) as conn:
        job = jobs.claim(conn, "test-worker", 300, 3, time.time() + 2)
    return parts, db, job


def test_a_triaged_decision_is_recorded_with_its_result_objects_queued(claimed):
    parts, db, job = claimed
    decision = parts.triage(db).decide(job)
    assert decision.state == SeriesState.TRIAGED and decision.run and decision.run.verdict
    outcome = parts.recorder(db).record(decision)
    assert outcome.current and sorted(pydicom.dcmread(o.path).Modality for o in outcome.queued) == ["OT", "SR"]
    assert all(o.alert == decision.run.verdict.flag for o in outcome.queued)
    sr = next(o for o in outcome.queued if pydicom.dcmread(o.path).Modality == "SR")
    assert db.conn.execute("SELECT role, sr_instance_uid, superseded FROM inference_results").fetchall() == [
        ("active", sr.sop_instance_uid, 0)]
    assert db.conn.execute("SELECT outcome FROM drift_series").fetchall() == [("triaged",)]
    [latency] = [json.loads(p)["latency"] for (p,) in db.conn.execute(
        "SELECT payload FROM audit_log WHERE kind = 'inference'")]
    assert set(latency) == {"queue_wait_s", "decode_s", "inference_s", "output_s"}


def test_result_objects_that_cannot_be_made_fail_the_series_with_the_reason_and_a_notice(claimed):
    parts, db, job = claimed
    decision = parts.triage(db).decide(job)
    assert decision.run is not None
    # No code the SR could state: neither in the package nor from the words.
    odd = decision.run.model.manifest.model_copy(update={"finding": "gremlins", "finding_code": None})
    decision = replace(decision, run=replace(decision.run, model=replace(decision.run.model, manifest=odd)))
    outcome = parts.recorder(db).record(decision)
    assert outcome.state == SeriesState.FAILED and outcome.current
    [notice] = outcome.queued
    assert pydicom.dcmread(notice.path).Modality == "SR"
    assert db.conn.execute("SELECT state, reason FROM series").fetchone() == (
        "failed", "no coded finding for 'gremlins'")
    assert db.conn.execute("SELECT reason_code FROM notices").fetchall() == [("NA-FAILED",)]
    assert db.conn.execute("SELECT COUNT(*) FROM inference_results").fetchone() == (0,)
    assert db.conn.execute("SELECT outcome FROM drift_series").fetchall() == [("no-finding-code",)]


def test_the_sr_spells_the_finding_as_the_pages_do_whatever_the_package_wrote(claimed):
    parts, db, job = claimed
    decision = parts.triage(db).decide(job)
    assert decision.run is not None and decision.run.verdict is not None
    american = decision.run.model.manifest.model_copy(update={
        "finding": "intracranial hemorrhage", "finding_code": ("1386000", "SCT", "Intracranial hemorrhage")})
    verdict = decision.run.verdict  # flagged, so the SR states the finding's code as well as its words
    flagged = replace(verdict, flag=True, score=max(verdict.score, verdict.threshold))
    run = replace(decision.run, model=replace(decision.run.model, manifest=american), verdict=flagged)
    outcome = parts.recorder(db).record(replace(decision, run=run))
    sr = next(pydicom.dcmread(o.path) for o in outcome.queued if pydicom.dcmread(o.path).Modality == "SR")
    said = [str(e.value) for e in sr.iterall() if e.keyword in ("CodeMeaning", "TextValue")]
    assert "Intracranial haemorrhage" in said  # the code's meaning
    assert any("suspected intracranial haemorrhage" in text for text in said)  # the comment's words
    assert not any("hemorrhage" in text.lower() for text in said)

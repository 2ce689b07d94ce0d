"""Reads never write: the worker's scheduled upkeep keeps the study summary and the drift
windows; the worklist, its JSON API and ``appliance drift status`` only read them and say
how old they are. Every time is injected."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from appliance import cli
from appliance.config import load_settings
from appliance.db import transaction
from appliance.drift.service import record_series
from appliance.outcome.upkeep import DRIFT_WINDOWS, STUDY_SUMMARY, Upkeep, last_ran
from appliance.parts import Parts
from appliance.receive.index import IngestIndex
from appliance.web import accounts
from appliance.web.app import create_app
from tests.helpers.boxes import arrived
from tests.helpers.drift import REFERENCE_STYLE, series_record
from tests.helpers.series import ct_dataset

NOW = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    return Parts(load_settings())


def one_study(parts, name: str = "Doe^Jane") -> str:
    """A two-slice CT series stored and indexed as the listener would; its study UID."""
    study, series = generate_uid(), generate_uid()
    spool = parts.settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        ds = ct_dataset(study, series, i)
        ds.PatientName = name
        path = spool / f"{series}-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        IngestIndex(parts.database()).record(arrived(ds, path, "CT1", "assoc-1", "Head"), now=NOW)
    return study


def test_a_new_upkeep_runs_every_task_then_each_when_its_period_has_passed(parts):
    db = parts.database()
    upkeep = Upkeep(db, parts.settings.drift, summary_every_s=1.0, drift_every_s=60.0)
    assert upkeep.run_due(NOW) == [STUDY_SUMMARY, DRIFT_WINDOWS]
    assert upkeep.run_due(NOW + 0.5) == []
    assert upkeep.run_due(NOW + 1.0) == [STUDY_SUMMARY]
    assert upkeep.run_due(NOW + 60.0) == [STUDY_SUMMARY, DRIFT_WINDOWS]
    assert (last_ran(db.conn, STUDY_SUMMARY), last_ran(db.conn, DRIFT_WINDOWS)) == (NOW + 60.0, NOW + 60.0)


def test_the_study_summary_with_its_header_fields_comes_from_the_upkeep_not_from_a_read(parts):
    db = parts.database()
    study = one_study(parts, name="Roe^Richard")
    token = accounts.create_token(db.conn, "radiologist", "ris", "test")
    client = TestClient(create_app(parts), base_url="http://127.0.0.1",
                        headers={"Authorization": f"Bearer {token}"})

    answer = client.get("/api/studies").json()
    assert (answer["total"], answer["summarised_at"]) == (0, None)  # the read did not summarise
    assert db.conn.execute("SELECT COUNT(*) FROM web_studies").fetchone() == (0,)

    Upkeep(db, parts.settings.drift, 1.0, 60.0).run_due(NOW)
    answer = client.get("/api/studies").json()
    assert answer["summarised_at"] == NOW
    [row] = answer["studies"]
    assert (row["study_instance_uid"], row["state"], row["patient_name"]) == (study, "pending", "Roe^Richard")


def test_drift_status_reads_the_windows_the_upkeep_closed_and_says_when(parts, capsys):
    db = parts.database()
    rng = np.random.default_rng(3)
    with transaction(db.conn) as conn:
        for job in range(1, 4):
            r = series_record(REFERENCE_STYLE, rng)
            record_series(conn, job_id=job, model_id="head-ct", model_version="1.0.0", features=r["features"],
                          score=r["score"], flag=r["flag"], now=NOW - 3 * 86400)

    def status() -> dict:
        assert cli.main(["drift", "status", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    assert status()["windows_closed_at"] is None
    assert status()["models"][0]["last_closed_window"] is None  # asking twice closed nothing
    Upkeep(db, parts.settings.drift, 1.0, 60.0).run_due(NOW)
    closed = status()
    assert closed["windows_closed_at"] == NOW
    assert closed["models"][0]["last_closed_window"] == (dt.date(2026, 5, 3)).isoformat()

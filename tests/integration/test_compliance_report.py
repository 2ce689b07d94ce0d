"""``appliance report compliance --from --to`` (issue 23) on a box that received, triaged
and refused series, with the shipped head-CT model: counts of the period only, reasons,
models in service with their validation figures and who activated them, sign-ins, the
audit chain verified; no patient identifier in it."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pydicom
import pytest

from appliance.cli import main
from appliance.config import load_settings
from appliance.db import open_database
from appliance.errors import LoginRefused
from appliance.models.registry import ModelRegistry
from appliance.parts import Parts
from appliance.receive.index import IngestIndex
from appliance.web import accounts, sessions
from tests.helpers.boxes import arrived, queue_and_work
from tests.helpers.series import head_ct, write_mr_series


@pytest.fixture
def box(tmp_path, monkeypatch, demo_packages):
    env = {
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_MODELS_TRUSTED_KEYS": str(demo_packages["public_key"]),
        "APPLIANCE_DICOM_DESTINATIONS": "PACS@127.0.0.1:9",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(environ=env)
    db = open_database(settings.db_path)
    registry = ModelRegistry(db, settings.models_dir, [demo_packages["public_key"]])
    model = registry.install(demo_packages["head-ct"][0], "cli:biomed-anna")
    registry.activate(model.id, model.version, "cli:biomed-anna")
    index = IngestIndex(db)
    now = time.time()
    for n, (files, when) in enumerate(
        (
            (head_ct(tmp_path / "ct", seed=31), now),
            (write_mr_series(tmp_path / "mr", 4)[1], now),
            (write_mr_series(tmp_path / "old", 4)[1], now - 10 * 86400),  # before the period
        )
    ):
        for path in files:
            ds = pydicom.dcmread(path)
            ds.PatientName, ds.PatientID = f"Secret^Patient{n}", f"PID-SECRET-{n}"
            ds.save_as(path)
            index.record(arrived(ds, path, "CT_1", f"assoc-{n}", str(ds.get("SeriesDescription", ""))), now=when)
    queue_and_work(index, Parts(settings).worker(db))
    accounts.add_user(db.conn, "rad", "radiologist", "twelve chars or more", "test")
    sessions.sign_in(db.conn, settings.web, "rad", "twelve chars or more", "10.0.0.1", now=now)
    with pytest.raises(LoginRefused):
        sessions.sign_in(db.conn, settings.web, "rad", "wrong password here", "10.0.0.1", now=now)
    today = datetime.now(UTC).date()
    return settings, str(today - timedelta(days=1)), str(today + timedelta(days=1))


def test_the_report_counts_the_period_and_names_models_reasons_and_access(box, capsys):
    settings, start, end = box
    assert main(["report", "compliance", "--from", start, "--to", end, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "Secret" not in out and "PID-SECRET" not in out
    report = json.loads(out)
    assert report["received"]["studies"] == 2 and report["received"]["series"] == 2
    assert report["decided"]["triaged"] == 1 and report["decided"]["not-eligible"] == 1
    (refused,) = report["not_analysed"]
    assert refused["state"] == "not-eligible" and "MR" in refused["reason"] and refused["series"] == 1
    (inferences,) = [i for i in report["inferences_by_model"] if i["role"] == "active"]
    assert inferences["model_id"] == "head-ct-ich-demo" and inferences["series"] == 1
    (model,) = report["models_in_service"]
    assert model["state"] == "active" and 0 < model["validation_sensitivity"] <= 1 and model["threshold"] is not None
    assert [(c["change"], c["by"]) for c in report["model_changes"]] == [
        ("model-installed", "cli:biomed-anna"),
        ("model-active", "cli:biomed-anna"),
    ]
    assert report["sign_ins"]["signed_in"] == 1 and report["sign_ins"]["failed"] == 1
    assert report["audit"]["chain_verified"] is True and report["audit"]["rows_in_period"] >= 5
    assert report["delivered"]["pending_now"] >= 2  # the SR and the capture wait for a PACS that is not there

    assert main(["report", "compliance", "--from", start, "--to", end]) == 0
    text = capsys.readouterr().out
    assert "chain verified" in text and "head-ct-ich-demo" in text and "Secret" not in text

    assert main(["report", "compliance", "--from", start, "--to", end, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>") and "chain verified" in page and "Secret" not in page
    assert "<td>not-eligible</td>" in page and "head-ct-ich-demo" in page


def test_a_broken_chain_fails_the_report_and_a_reversed_period_is_refused(box, capsys):
    settings, start, end = box
    with closing(sqlite3.connect(settings.db_path)) as conn, conn:
        conn.execute("UPDATE audit_log SET payload = '{}' WHERE seq = 2")
    assert main(["report", "compliance", "--from", start, "--to", end]) == 1
    assert "chain BROKEN" in capsys.readouterr().out
    assert main(["report", "compliance", "--from", end, "--to", start]) == 2
    assert "is before --from" in capsys.readouterr().err

"""Issue 11 meets issue 12: the box queues each closed day's anonymised drift report by
itself at the start of ``appliance sync`` (one per model version and day, never twice),
the real hub holds exactly one of each and none with a cell under k, the box's status
shows the sync state, and the fleet page shows the box's own drift alerts beside the
hub's PSI."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys

import pytest

from appliance.db import open_database
from appliance.drift.anonymised import stable_report_id
from appliance.sync.client import HubClient, HubError, http_client
from appliance.sync.identity import Enrolment, load_or_create_key
from appliance.sync.round import enrol
from tests.helpers.drift import record_days
from tests.helpers.hub import REPO, box_env, box_settings

K = 10


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**box_env(settings), "APPLIANCE_DRIFT_MIN_SERIES": str(settings.drift.min_series),
           "APPLIANCE_DRIFT_K": str(settings.drift.k)}
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def _cells(report: dict):
    """Every count cell of a report."""
    for model in report["models"]:
        yield model["series"]
        yield model["flagged"]
        yield from model["not_analysed"].values()
        for feature in model["features"].values():
            counts = feature["counts"]
            yield from (counts.values() if isinstance(counts, dict) else counts)


def test_closed_days_reach_the_hub_once_per_model_version_and_day(hub, tmp_path):
    settings = box_settings(tmp_path / "box", drift_min_series="40", drift_k=str(K))
    # 1.0.0 on the 14 days before today, the scanner changing 4 days ago; 1.1.0 on two days.
    record_days(settings.db_path, settings.drift, "1.0.0", range(1, 15), per_day=12, unseen_from=4)
    record_days(settings.db_path, settings.drift, "1.1.0", range(1, 3), per_day=11, job0=10_000, seed=8)
    conn = open_database(settings.db_path).conn
    recorded = set(conn.execute("SELECT DISTINCT day, model_id, model_version FROM drift_series").fetchall())
    assert len(recorded) == 16
    enrol(settings, hub.url, hub.token(site="box-a"))
    device_id = Enrolment.load(settings.data_dir).device_id
    # The hub keeps only the category labels on its allow-list (issue 24, D2): the operator
    # allows the kernels of this fleet; the manufacturers stay unnamed.
    assert "allowed now: B70f, FC23" in hub.admin("allow-category", "kernel", "B70f", "FC23").stdout

    first = _cli(settings, "sync", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout)
    assert (result["queued"], result["pushed"], result["push_error"]) == (16, 16, None), result
    again = json.loads(_cli(settings, "sync", "--json").stdout)
    assert (again["queued"], again["pushed"]) == (0, 0), again  # each closed day is queued once, ever

    db = hub.database()
    try:
        held = db.rows("SELECT r.report_id, r.device_id, r.day, m.model_id, m.model_version, r.body "
                       "FROM reports r JOIN report_models m ON m.report_id = r.report_id")
        assert db.one("SELECT COUNT(*) FROM reports")[0] == 16
    finally:
        db.close()
    per_key = {}
    for report_id, device, day, model_id, version, body in held:
        assert device == device_id
        per_key.setdefault((day, model_id, version), []).append(report_id)
        assert report_id == stable_report_id(device_id, dt.date.fromisoformat(day), model_id, version)
        report = json.loads(body)
        assert [(m["model_id"], m["model_version"]) for m in report["models"]] == [(model_id, version)]
        assert report["k"] == K
        cells = list(_cells(report))
        assert all(c is None or c >= K for c in cells), (day, version, [c for c in cells if c is not None])
        assert any(c is not None for c in cells)
    assert set(per_key) == recorded and all(len(ids) == 1 for ids in per_key.values())
    labels = {label for *_, body in held for model in json.loads(body)["models"]
              for name, feature in model["features"].items() if name == "manufacturer_model"
              for label in feature["counts"]}
    assert labels == {"other"}  # "ACME Scan 64" and "Other Vendor X1" are on no allow-list

    # The box says where it stands: enrolled, what is queued and delivered, the last round,
    # how old its release metadata is, in both status commands.
    sync_status = json.loads(_cli(settings, "sync", "status", "--json").stdout)
    full = json.loads(_cli(settings, "status", "--json").stdout)["sync"]
    for shown in (sync_status, full):
        assert shown["enrolled"] is True and shown["enrolment"]["device_id"] == device_id
        reports = shown["reports"]
        assert (reports["pending"], reports["delivered"], reports["rejected"]) == (0, 16, 0)
        assert shown["last_round"]["pushed"] == 0 and shown["last_round"]["push_error"] is None
        assert shown["metadata"]["age_s"] is not None and shown["metadata"]["age_s"] < 3600

    # The box's own alerts travel with its check-in and stand beside the hub's PSI.
    active = {(a["model_id"], a["model_version"], a["feature"])
              for a in json.loads(_cli(settings, "drift", "status", "--json").stdout)["alerts"]}
    assert ("head-ct", "1.0.0", "kernel") in active
    db = hub.database()
    try:
        told = json.loads(db.one("SELECT drift_alerts FROM devices WHERE device_id = ?", (device_id,))[0])
    finally:
        db.close()
    assert {(a["model_id"], a["version"], a["feature"]) for a in told} == active
    page = hub.fleet_page()
    shown = re.findall(r'<span class="box-alert">([^<]+)</span> <span class="muted">hub PSI ([^<]+)</span>', page)
    assert {name for name, _ in shown} == {f"{m} {v}: {f}" for m, v, f in active}
    kernel_psi = dict(shown)["head-ct 1.0.0: kernel"]
    assert float(kernel_psi) > 0.25  # the hub sees the same change in the reports it holds

    # Only the controlled vocabulary of feature names is taken at check-in.
    body = {"appliance_version": "0.1.0", "models": [], "metadata_refreshed_at": None, "release_error": None,
            "drift_alerts": [{"model_id": "head-ct", "version": "1.0.0", "feature": "Patient Smith"}]}
    with http_client(hub.url, 20) as http:
        client = HubClient(http, device_id, load_or_create_key(settings.data_dir))
        with pytest.raises(HubError, match=r"drift_alerts\[0\].feature: not a drift feature name"):
            client.post("/v1/checkin", body)

"""Studies sent over DICOM to a running ``appliance serve`` update the drift features,
``appliance drift status`` shows them, and the anonymised report holds none of the
patients' names, IDs, UIDs, accession numbers or times (issue 11, done-means)."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest

from appliance.drift.histograms import ct_series_histograms
from appliance.pixels import to_hu
from scripts.harness import REPO, ApplianceProcess, tcp_env
from tests.helpers.series import ROUTINE_SLICES
from training.data.ct_synth import CTConfig, generate_ct_dataset

K = 2
PATIENTS = 3


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def triaged_box(tmp_path, quick_packages):
    """``appliance serve`` with the quick head-CT model active, after three CT studies
    arrived over DICOM and were triaged."""
    box = ApplianceProcess(tmp_path / "data", dicom_quiet_period_s="1",
                           models_trusted_keys=str(quick_packages["public_key"]), drift_k=str(K))
    cli(box.env, "models", "install", "--activate", str(quick_packages["head-ct"]))
    box.command = "serve"
    box.start()
    try:
        generate_ct_dataset(CTConfig(n_patients=PATIENTS, seed=31, matrix=128, **ROUTINE_SLICES), tmp_path / "ct", workers=1)
        files = sorted((tmp_path / "ct").glob("*/CT/*.dcm"))
        subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(box.port), *map(str, files)],
                       env=tcp_env(), check=True, timeout=300, capture_output=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            series = box.status()["series"]
            if len(series) == PATIENTS and all(s["state"] in ("triaged", "failed") for s in series):
                break
            time.sleep(0.5)
        assert [s["state"] for s in series] == ["triaged"] * PATIENTS, series
        yield box, files
    finally:
        box.stop()


def test_features_status_and_anonymised_report(triaged_box):
    box, files = triaged_box

    # Features were stored per series with the same code that built the package reference.
    conn = sqlite3.connect(box.data_dir / "appliance.db")
    stored = sorted(json.loads(f)["histograms"]["hu"] for (f,) in conn.execute("SELECT features FROM drift_series"))
    conn.close()
    expected = []
    for folder in sorted({f.parent for f in files}):
        slices = sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")),
                        key=lambda d: float(d.ImagePositionPatient[2]))
        hu = np.stack([to_hu(d.pixel_array, float(d.RescaleSlope), float(d.RescaleIntercept)) for d in slices])
        expected.append(ct_series_histograms(hu, float(slices[0].SliceThickness),
                                             float(slices[0].PixelSpacing[0]))["hu"]["counts"])
    assert stored == sorted(expected)

    status = json.loads(cli(box.env, "drift", "status", "--json"))
    [model] = status["models"]
    assert model["model_id"] == "head-ct-ich-demo" and model["window"]["series"] == PATIENTS
    assert model["window"]["judged"] is False  # far below the 150 series a window needs
    features = model["features"]
    assert features["hu"]["count"] == sum(sum(c) for c in expected)
    assert features["hu"]["statistic"] == "js_distance" and features["hu"]["threshold_source"] == "package"
    assert sum(features["kernel"]["counts"].values()) == PATIENTS
    assert sum(features["body_part"]["counts"].values()) == PATIENTS
    text = cli(box.env, "drift", "status")
    assert f"{PATIENTS} series in the 7-day window" in text and "hu" in text and "kernel" in text

    # The report of today: scan every byte for what identifies the patients and studies.
    today = dt.datetime.now(dt.timezone.utc).date()
    raw = cli(box.env, "drift", "report", "--day", today.isoformat())
    report = json.loads(raw)
    assert report["models"][0]["series"] == PATIENTS
    secrets = set()
    for path in files:
        d = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(d.PatientName), str(d.PatientName).replace("^", " "), *str(d.PatientName).split("^"),
                    str(d.PatientID), str(d.StudyInstanceUID), str(d.SeriesInstanceUID), str(d.SOPInstanceUID),
                    str(d.AccessionNumber), str(d.StudyID), str(d.StudyDate), str(d.StudyTime),
                    f"{d.StudyDate[:4]}-{d.StudyDate[4:6]}-{d.StudyDate[6:]}", str(d.InstitutionName),
                    f'"{d.DeviceSerialNumber}"', str(d.get("PatientBirthDate", "")) or "no-birth-date"}
    secrets.discard("")
    for secret in secrets:
        assert secret.encode() not in raw.encode(), f"{secret!r} appears in the report"
    assert not re.search(r"\d{2}:\d{2}|T\d{2}|\d{8}T|\b\d{6}\.\d+\b", raw), "a time appears in the report"
    days = set(re.findall(r"\d{4}-\d{2}-\d{2}", raw))
    assert days == {today.isoformat()}, days

    # Cells below k are absent: a category seen fewer than k times leaves no trace, not even
    # its label (a label is free text from the scanner); the others keep their counts.
    shown = report["models"][0]["features"]
    for name in ("kernel", "manufacturer_model", "body_part"):
        assert any(count < K for count in features[name]["counts"].values()) or name == "body_part"
        for label, count in features[name]["counts"].items():
            if count >= K:
                assert shown[name]["counts"][label] == count
            else:
                assert label not in shown[name]["counts"] and label not in raw
    for feature in shown.values():
        cells = feature["counts"].values() if feature["kind"] == "categorical" else feature["counts"]
        assert all(c is None or c >= K for c in cells)

"""Orthanc as the PACS: studies pushed from it come back triaged, as SR and secondary
capture in the same study; an MR series is not eligible and produces nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.orthanc import Orthanc
from tests.support import READY_TIMEOUT_S, REPO, ApplianceProcess, free_port, wait_until, write_mr_series
from training.data.cr_synth import CRConfig, generate_cr_dataset
from training.data.ct_synth import CTConfig, generate_ct_dataset


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def pacs_and_box(tmp_path_factory, demo_packages):
    """Orthanc, and `appliance serve` with the demo models active and Orthanc as destination."""
    folder = tmp_path_factory.mktemp("e2e")
    port = free_port()
    with Orthanc(folder / "orthanc", modalities={"appliance": ("TRIAGE", "127.0.0.1", port)}) as pacs:
        box = ApplianceProcess(folder / "data", port=port,
                               dicom_destinations=pacs.destination,
                               models_trusted_keys=str(demo_packages["public_key"]))
        for model in ("head-ct", "chest-cr"):
            for package in demo_packages[model]:
                cli(box.env, "models", "install", "--activate", str(package))
        box.command = "serve"
        box.start()
        yield pacs, box
        box.stop()


def series_entry(box: ApplianceProcess, series_uid: str, states: set[str]) -> dict:
    """The series' status entry once it is in one of ``states``; the demo models run at
    full size, so a loaded machine gets twice the usual deadline."""
    def entry() -> dict | None:
        return next((e for e in box.status()["series"]
                     if e["series_instance_uid"] == series_uid and e["state"] in states), None)

    return wait_until(entry, timeout=2 * READY_TIMEOUT_S, what=f"series in {sorted(states)}", interval=0.2)


def push(pacs: Orthanc, files: list[Path]) -> str:
    for path in files:
        pacs.upload(path)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    pacs.store_study("appliance", study_uid)
    return study_uid


def results_in(pacs: Orthanc, study_uid: str, tmp_path: Path) -> dict[str, Path]:
    """The SR and SC that came back into the study, written to files."""
    found: dict[str, Path] = {}

    def both_arrived() -> bool:
        for instance in pacs.instances_of_study(study_uid):
            path = tmp_path / f"{instance['ID']}.dcm"
            if not path.exists():
                path.write_bytes(pacs.instance_file(instance["ID"]))
            modality = pydicom.dcmread(path, stop_before_pixels=True).Modality
            if modality in ("SR", "OT"):
                found[modality] = path
        return set(found) == {"SR", "OT"}

    wait_until(both_arrived, what="the SR and the capture in Orthanc", interval=0.3)
    return found


def sr_says(path: Path) -> str:
    """'Present' or 'Absent', from the dump of the SR's content tree."""
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=True).stdout
    return "Present" if "Present" in dump else "Absent" if "Absent" in dump else dump


def assert_valid(path: Path) -> None:
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def head_ct(folder: Path, positive: bool) -> list[Path]:
    """A synthetic head CT from the generator: seed 202's patient 3 has a large
    haemorrhage, seed 101's patient 1 none (a clear case each for the shipped demo model,
    whose specificity at its operating point is only about 0.5)."""
    seed, index = (202, 3) if positive else (101, 1)
    truths = generate_ct_dataset(CTConfig(n_patients=index + 1, seed=seed), folder, workers=1)
    truth = truths[index]
    assert (truth.label, truth.size_bucket) == ((1, "large") if positive else (0, "none"))
    return sorted(p for p in folder.glob("*/CT/*.dcm")
                  if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == truth.series_uid)


@pytest.mark.parametrize("positive", [True, False], ids=["haemorrhage", "negative"])
def test_head_ct_comes_back_with_an_sr_that_says_what_the_model_found(pacs_and_box, tmp_path, positive):
    pacs, box = pacs_and_box
    files = head_ct(tmp_path / "ct", positive=positive)
    study_uid = push(pacs, files)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    entry = series_entry(box, series_uid, {"triaged", "failed"})
    assert entry["state"] == "triaged" and entry["flag"] is positive
    found = results_in(pacs, study_uid, tmp_path)
    assert sr_says(found["SR"]) == ("Present" if positive else "Absent")
    for path in found.values():
        assert pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID == study_uid
        assert_valid(path)
    capture = pydicom.dcmread(found["OT"])
    assert capture.BurnedInAnnotation == "YES" and capture.SamplesPerPixel == 3
    # Orthanc lists an instance before the sender has its C-STORE response and marks it sent.
    wait_until(lambda: box.status()["outbox"][pacs.destination].get("sent", 0) >= 2,
               what="the outbox rows to be marked sent", interval=0.2)


def test_chest_radiograph_goes_to_the_chest_model(pacs_and_box, tmp_path):
    pacs, box = pacs_and_box
    generate_cr_dataset(CRConfig(n_patients=1, seed=7), tmp_path / "cr", workers=1)
    files = sorted((tmp_path / "cr").rglob("*.dcm"))
    study_uid = push(pacs, files)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    entry = series_entry(box, series_uid, {"triaged", "failed"})
    assert entry["state"] == "triaged" and entry["model"].startswith("chest-cr-pneumothorax-demo ")
    found = results_in(pacs, study_uid, tmp_path)
    for path in found.values():
        assert_valid(path)


def test_an_mr_series_is_not_eligible_and_produces_nothing(pacs_and_box, tmp_path):
    pacs, box = pacs_and_box
    series, files = write_mr_series(tmp_path / "mr", 12)
    study = push(pacs, files)
    entry = series_entry(box, series, {"not-eligible", "triaged", "failed"})
    assert entry["state"] == "not-eligible" and "modality MR" in entry["reason"]
    # Not-eligible is final and nothing was queued for sending, so nothing can arrive later
    # (no sleep-and-hope): the outbox is empty for the study, and Orthanc holds only the MR.
    with sqlite3.connect(box.data_dir / "appliance.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE study_instance_uid = ?", (study,)).fetchone()[0] == 0
    assert len(pacs.instances_of_study(study)) == 12

"""dcmtk sends real studies over real associations; every instance is stored and indexed."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from appliance.db import open_database
from appliance.receive.index import IngestIndex
from scripts.harness import ApplianceProcess, tcp_env, wait_until
from tests.helpers.series import write_ct_series


def dataset_sha256(path: Path) -> str:
    """sha256 of the dataset part of a DICOM file (after the File Meta group)."""
    with open(path, "rb") as stream:
        read_preamble(stream, False)
        _read_file_meta_info(stream)
        return hashlib.sha256(stream.read()).hexdigest()


def indexed(data_dir: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(data_dir / "appliance.db") as db:
        return {uid: (sha, path) for uid, sha, path in db.execute(
            "SELECT sop_instance_uid, sha256, path FROM instances")}


def wait_for_state(process: ApplianceProcess, state: str) -> dict:
    def reached() -> dict | None:
        status = process.status()
        return status if status["series"] and all(s["state"] == state for s in status["series"]) else None

    return wait_until(reached, what=f"every series to be {state!r}", interval=0.2)


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct"), 200, size=512)


def test_storescu_sends_200_slices_and_every_one_is_stored_with_its_hash(ct_study, tmp_path):
    process = ApplianceProcess(tmp_path / "data").start()
    try:
        sent = subprocess.run(
            ["storescu", "-aet", "CTSCANNER", "-aec", "TRIAGE", "+sd", "127.0.0.1",
             str(process.port), str(ct_study[0].parent)],
            env=tcp_env(), capture_output=True, text=True, timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        rows = indexed(process.data_dir)
        assert len(rows) == 200
        for path in ct_study:
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            sha, stored = rows[uid]
            assert sha == dataset_sha256(path)
            assert dataset_sha256(Path(stored)) == sha
            with open(stored, "rb") as f:
                assert f.read(132) == b"\0" * 128 + b"DICM"

        status = wait_for_state(process, "queued")  # released + 1 s grace, or 5 s quiet
        assert status["instances_received"] == 200
        [series] = status["series"]
        assert series["modality"] == "CT" and series["instances"] == 200
        assert status["jobs"] == {"queued": 1}
    finally:
        process.stop()

    # A restart keeps every instance and the queued job.
    process.start()
    try:
        after = process.status()
        assert after["instances_received"] == 200
        assert after["jobs"] == {"queued": 1}
        assert after["series"][0]["state"] == "queued"
    finally:
        process.stop()


def test_a_resend_of_identical_bytes_adds_no_row_and_changed_bytes_are_recorded(tmp_path, appliance):
    files = write_ct_series(tmp_path / "s", 3)
    send = ["storescu", "-aec", "TRIAGE", "127.0.0.1", str(appliance.port)]
    subprocess.run(send + [str(p) for p in files], env=tcp_env(), check=True, timeout=60)
    subprocess.run(send + [str(p) for p in files], env=tcp_env(), check=True, timeout=60)
    assert len(indexed(appliance.data_dir)) == 3

    changed = pydicom.dcmread(files[0])
    changed.SeriesDescription = "Corrected series description"
    changed.save_as(files[0])
    subprocess.run(send + [str(files[0])], env=tcp_env(), check=True, timeout=60)
    rows = indexed(appliance.data_dir)
    assert len(rows) == 3
    assert rows[changed.SOPInstanceUID][0] == dataset_sha256(files[0])
    with sqlite3.connect(appliance.data_dir / "appliance.db") as db:
        [(uid, old, new)] = db.execute(
            "SELECT sop_instance_uid, old_sha256, new_sha256 FROM instance_replacements").fetchall()
    assert uid == changed.SOPInstanceUID and old != new == rows[uid][0]


def test_quiet_period_completes_a_series_whose_association_never_released(tmp_path, make_appliance):
    # The release grace is an hour: only the quiet period can queue the series.
    process = make_appliance(dicom_quiet_period_s="1.0", dicom_release_grace_s="3600")
    files = write_ct_series(tmp_path / "s", 4)
    subprocess.run(["storescu", "-aec", "TRIAGE", "127.0.0.1", str(process.port), *map(str, files)],
                   env=tcp_env(), check=True, timeout=60)
    status = wait_for_state(process, "queued")
    assert status["series"][0]["instances"] == 4


def test_a_late_instance_reopens_the_series_and_queues_a_new_job(tmp_path, appliance):
    files = write_ct_series(tmp_path / "s", 5)
    send = ["storescu", "-aec", "TRIAGE", "127.0.0.1", str(appliance.port)]
    subprocess.run(send + [str(p) for p in files[:4]], env=tcp_env(), check=True, timeout=60)
    wait_for_state(appliance, "queued")
    subprocess.run(send + [str(files[4])], env=tcp_env(), check=True, timeout=60)
    status = wait_for_state(appliance, "queued")
    assert status["series"][0]["instances"] == 5
    # The first job had not started: it is superseded, not erased.
    assert status["jobs"] == {"queued": 1, "superseded": 1}


def test_a_sender_with_no_release_grace_is_queued_at_release_and_another_waits(tmp_path, make_appliance):
    # The default grace is an hour and so is the quiet period: only WHOLE's own 0 can queue.
    process = make_appliance(dicom_quiet_period_s="3600", dicom_release_grace_s="3600",
                             dicom_release_grace_by_ae="WHOLE=0")
    for ae, folder in (("OTHER", "o"), ("WHOLE", "w")):
        files = write_ct_series(tmp_path / folder, 3)
        subprocess.run(["storescu", "-aet", ae, "-aec", "TRIAGE", "127.0.0.1", str(process.port),
                        *map(str, files)], env=tcp_env(), check=True, timeout=60)
    wait_until(lambda: [s for s in process.status()["series"] if s["state"] == "queued"],
               what="WHOLE's series queued")
    states = sorted(s["state"] for s in process.status()["series"])
    assert states == ["queued", "receiving"]  # OTHER's series was released first and still waits
    assert process.status()["senders"] == {"OTHER": {"series": 1, "split": 0, "reopened": 0},
                                           "WHOLE": {"series": 1, "split": 0, "reopened": 0}}


def test_a_sender_that_never_splits_a_series_is_learned_and_queued_at_release(tmp_path, make_appliance):
    """``dicom.learn_grace_after_series``: after two series from SCANNER, each in one
    association, its third is queued at its release. The grace and the quiet period are
    far longer than the test, so nothing else could have queued it."""
    process = make_appliance(dicom_quiet_period_s="3600", dicom_release_grace_s="3600",
                             dicom_learn_grace_after_series="2")
    send = ["storescu", "-aet", "SCANNER", "-aec", "TRIAGE", "127.0.0.1", str(process.port)]
    # SCANNER's first two series, each in its own association, are queued through the
    # index's own call (the hour's quiet period, elapsed at once).
    for n in range(2):
        subprocess.run(send + [str(p) for p in write_ct_series(tmp_path / f"s{n}", 3)], env=tcp_env(), check=True,
                       timeout=60)
    wait_until(lambda: len(process.status()["series"]) == 2, what="two series received")
    index = IngestIndex(open_database(process.data_dir / "appliance.db"))
    assert sorted(index.queue_complete_series(0, 0)) == sorted(s["series_instance_uid"]
                                                               for s in process.status()["series"])
    subprocess.run(send + [str(p) for p in write_ct_series(tmp_path / "s2", 3)], env=tcp_env(), check=True, timeout=60)
    wait_until(lambda: [s["state"] for s in process.status()["series"]] == ["queued"] * 3,
               what="SCANNER's third series queued at its release")

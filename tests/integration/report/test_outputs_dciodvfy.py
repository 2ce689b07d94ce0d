"""The result objects, written to disk, pass dicom3tools' dciodvfy and read back as stated.

Sources go through files too: the SR is built from headers read with
``stop_before_pixels``, the capture from the key slice's decoded pixels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian

from appliance.report import ResultUids, build_heatmap_capture, build_sr
from tests.unit.report.test_result_objects import (
    DEVICE_UID, coded_value, ct_series, decision, dx_image, nodule_decision, num_value, only,
)

# A private coding scheme (99TRIAGE, declared in the SR) is the only thing dciodvfy may
# warn about; any other warning is a regression to look at.
ALLOWED_WARNINGS = ("Unrecognized defined term <99TRIAGE> for value 1 of attribute <Coding Scheme Designator>",)


def write(ds: Dataset, path: Path) -> Path:
    if "TransferSyntaxUID" not in ds.get("file_meta", {}):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> tuple[str, list[str]]:
    """The IOD dciodvfy recognised and its findings (Error / Warning lines) for one file."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    findings = [line for line in lines if line.startswith(("Error", "Warning"))]
    iods = [line for line in lines if line and not line.startswith(("Error", "Warning"))]
    iod = iods[0] if len(iods) == 1 else repr(iods)  # the IOD name, on a line of its own
    assert (out.returncode == 0) == (not any(f.startswith("Error") for f in findings)), (out.returncode, findings)
    return iod, findings


def assert_valid(path: Path, allowed: tuple[str, ...] = ALLOWED_WARNINGS) -> None:
    iod, findings = dciodvfy(path)
    assert iod == {"SR": "Comprehensive3DSR", "OT": "SCImage"}[pydicom.dcmread(path).Modality]
    assert not [f for f in findings if f.startswith("Error")], findings
    assert not [f for f in findings if not f.endswith(allowed)], findings


def source_files(tmp_path: Path, datasets: list[Dataset]) -> list[Path]:
    folder = tmp_path / "source"
    folder.mkdir()
    return [write(ds, folder / f"{i:03d}.dcm") for i, ds in enumerate(datasets)]


@pytest.mark.parametrize("flag, expected", [(True, "52101004"), (False, "272519000")])
def test_head_ct_sr_passes_dciodvfy_and_reads_back(tmp_path, flag, expected):
    paths = source_files(tmp_path, ct_series())
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    d = decision(flag)
    path = write(build_sr(headers, d, ResultUids.from_key(f"ct-{flag}"), device_uid=DEVICE_UID), tmp_path / "sr.dcm")
    assert_valid(path)
    assert subprocess.run(["dsrdump", str(path)], capture_output=True, timeout=60).returncode == 0
    sr = pydicom.dcmread(path)
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID
    assert coded_value(only(sr, "1386000", "SCT")) == (expected, "SCT")
    assert num_value(only(sr, "SCORE", "99TRIAGE")) == pytest.approx(d.score)
    assert num_value(only(sr, "THRESHOLD", "99TRIAGE")) == pytest.approx(d.threshold)
    assert coded_value(only(sr, "FLAG", "99TRIAGE"))[0] == ("373066001" if flag else "373067005")


def test_chest_radiograph_sr_passes_dciodvfy(tmp_path):
    (path,) = source_files(tmp_path, [dx_image()])
    header = pydicom.dcmread(path, stop_before_pixels=True)
    out = write(build_sr([header], nodule_decision(False), ResultUids.from_key("dx"), device_uid=DEVICE_UID), tmp_path / "sr.dcm")
    assert_valid(out)
    assert coded_value(only(pydicom.dcmread(out), "786838002", "SCT")) == ("272519000", "SCT")


def _capture(tmp_path: Path, source: Dataset, window: tuple[float, float], d, allowed=ALLOWED_WARNINGS) -> Dataset:
    (path,) = source_files(tmp_path, [source])
    key = pydicom.dcmread(path)
    values = apply_modality_lut(key.pixel_array, key)
    heat = np.zeros((24, 24))
    heat[6:12, 8:14] = np.linspace(0.4, 1.0, 6)[None, :]
    out = write(build_heatmap_capture(key, values, window, heat, d, ResultUids.from_key("sc")), tmp_path / "sc.dcm")
    assert_valid(out, allowed)
    return pydicom.dcmread(out)


def test_head_ct_capture_passes_dciodvfy(tmp_path):
    sc = _capture(tmp_path, ct_series(1)[0], (40, 80), decision())
    assert (sc.PhotometricInterpretation, sc.BurnedInAnnotation) == ("RGB", "YES")
    assert sc.pixel_array.shape == (512, 512, 3)


def test_radiograph_capture_passes_dciodvfy(tmp_path):
    sc = _capture(tmp_path, dx_image(), (2048, 4096), nodule_decision(True))
    assert sc.pixel_array.shape == (512, 341, 3)


def test_capture_without_body_part_passes_dciodvfy(tmp_path):
    key = ct_series(1)[0]
    del key.BodyPartExamined
    # Laterality is then written empty (absent would be an error): dciodvfy warns.
    empty_laterality = ("should be absent (not empty) if an unpaired body part, and have a value if a paired body part"
                        " - attribute <Laterality>",)
    sc = _capture(tmp_path, key, (40, 80), decision(), ALLOWED_WARNINGS + empty_laterality)
    assert sc.Laterality == ""


def test_the_check_catches_a_broken_object(tmp_path):
    key = ct_series(1)[0]
    sc = build_heatmap_capture(key, np.zeros((64, 64)), (40, 80), np.zeros((8, 8)), decision(), ResultUids.from_key("x"))
    del sc.BurnedInAnnotation, sc.StudyInstanceUID
    iod, findings = dciodvfy(write(sc, tmp_path / "broken.dcm"))
    assert iod == "SCImage"
    assert any(f.startswith("Error") and "StudyInstanceUID" in f.replace(" ", "") for f in findings), findings

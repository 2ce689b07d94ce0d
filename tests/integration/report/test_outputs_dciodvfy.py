"""The result objects, written to disk, pass dicom3tools' dciodvfy and read back as stated.

Sources go through files too: the SR is built from headers read with
``stop_before_pixels``, the capture from the key slice's decoded pixels.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from appliance.report import (
    NOT_FOR_DIAGNOSTIC_USE,
    OUTSIDE_INPUT_CONSTRAINTS,
    NoticeContent,
    ResultUids,
    build_heatmap_capture,
    build_notice,
    build_sr,
    render,
)
from appliance.report.capture import summary_lines
from tests.helpers.series import ct_series, dx_image
from tests.helpers.sr import (
    ALLOWED_WARNINGS,
    DEVICE_UID,
    assert_valid,
    coded_value,
    dciodvfy,
    decision,
    find,
    nodule_decision,
    num_value,
    only,
    write,
)


def source_files(tmp_path: Path, datasets: list[Dataset]) -> list[Path]:
    folder = tmp_path / "source"
    folder.mkdir()
    return [write(ds, folder / f"{i:03d}.dcm") for i, ds in enumerate(datasets)]


@pytest.mark.parametrize("flag", [True, False], ids=["flagged", "not-flagged"])
def test_head_ct_sr_passes_dciodvfy_and_reads_back(tmp_path, flag):
    paths = source_files(tmp_path, ct_series())
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    d = decision(flag)
    uids = ResultUids.from_key(f"ct-{flag}")
    key = pydicom.dcmread(paths[2])
    capture = build_heatmap_capture(key, apply_modality_lut(key.pixel_array, key), (40, 80), np.zeros((8, 8)), d, uids)
    earlier = build_sr(headers, d, ResultUids.from_key("earlier"), device_uid=DEVICE_UID)
    sr = build_sr(headers, d, uids, device_uid=DEVICE_UID, key=headers[2], capture=capture,
                  predecessors=[earlier], procedure=("24725-4", "LN", "Head CT"))
    path = write(sr, tmp_path / "sr.dcm")
    assert_valid(path)
    assert subprocess.run(["dsrdump", str(path)], capture_output=True, timeout=60).returncode == 0
    sr = pydicom.dcmread(path)
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID
    assert coded_value(only(sr, "FLAG", "99TRIAGE"))[0] == ("373066001" if flag else "373067005")
    assert num_value(only(sr, "246262008", "SCT")) == pytest.approx(d.score)
    assert num_value(only(sr, "111071", "DCM")) == pytest.approx(d.threshold)
    assert find(sr, "1386000", "SCT") == []  # the finding is never a concept name (no Present/Absent)
    assert (len(find(sr, "FLAGREASON", "99TRIAGE")) == 1) is flag
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == earlier.SOPInstanceUID


def test_chest_radiograph_sr_passes_dciodvfy(tmp_path):
    (path,) = source_files(tmp_path, [dx_image()])
    header = pydicom.dcmread(path, stop_before_pixels=True)
    out = write(build_sr([header], nodule_decision(False), ResultUids.from_key("dx"), device_uid=DEVICE_UID), tmp_path / "sr.dcm")
    assert_valid(out)
    assert coded_value(only(pydicom.dcmread(out), "FLAG", "99TRIAGE")) == ("373067005", "SCT")


def test_not_analysed_notice_passes_dciodvfy(tmp_path):
    paths = source_files(tmp_path, ct_series(3))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    notice = NoticeContent("head CT", "Intracranial hemorrhage", "slice thickness 10 mm outside 0.5-5 mm",
                         OUTSIDE_INPUT_CONSTRAINTS, "head-ct-ich", "1.2.0", dt.datetime(2025, 3, 14, 10, 20, 5))
    out = write(build_notice(headers, notice, ResultUids.from_key("n"), device_uid=DEVICE_UID,
                             procedure=("24725-4", "LN", "Head CT")), tmp_path / "notice.dcm")
    assert_valid(out)
    sr = pydicom.dcmread(out)
    assert coded_value(only(sr, "NAREASON", "99TRIAGE")) == ("NA-INPUT", "99TRIAGE")
    assert coded_value(only(sr, "STATUS", "99TRIAGE")) == ("262008008", "SCT")
    assert find(sr, "1386000", "SCT") == [] and find(sr, "FLAG", "99TRIAGE") == []


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
    top, bottom = render.bands(512, NOT_FOR_DIAGNOSTIC_USE, summary_lines(decision()))
    assert sc.pixel_array.shape == (top + 512 + bottom, 512, 3)  # the slice between the text bands


def test_radiograph_capture_passes_dciodvfy(tmp_path):
    sc = _capture(tmp_path, dx_image(), (2048, 4096), nodule_decision(True))
    top, bottom = render.bands(341, NOT_FOR_DIAGNOSTIC_USE, summary_lines(nodule_decision(True)))
    assert sc.pixel_array.shape == (top + 512 + bottom, 341, 3)


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

"""Intake refuses each kind of bad labelled folder, naming the file or row and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from appliance.models.manifest import InputSpec
from tests.helpers.labelled_folder import DX, radiograph, write_folder, write_labels
from training.errors import IntakeError
from training.intake import intake

SPEC = InputSpec(kind="radiograph", modalities=["DX"], body_part="CHEST", sop_class_uids=[DX], channels=1, size=32)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    rows = write_folder(tmp_path / "data", seed=5, patients=6)
    return tmp_path / "data", rows


def refused(root: Path, **options) -> str:
    with pytest.raises(IntakeError) as caught:
        intake(root, SPEC, workers=1, **options)
    return str(caught.value)


def test_a_good_folder_passes_with_its_ranges_and_counts(folder):
    root, rows = folder
    found = intake(root, SPEC, indication_column="finding", subgroups=("site",), workers=1)
    card = found.card()
    assert card["series"] == card["files"] == card["patients"] == 6
    assert card["indication"] == {"in-indication": 3, "negative": 3} and card["subgroups"]["site"] == {"north": 4, "south": 2}
    constraints = found.input_constraints(SPEC)
    assert constraints["rows"] == {"min": 48, "max": 48} and constraints["view_positions"] == ["PA"]
    assert constraints["contrast"] == "none" and "slice_thickness_mm" not in constraints


def test_a_file_that_is_not_dicom_is_named(folder):
    root, _ = folder
    (root / "P000" / "notes.dcm").write_text("not an image")
    assert f"{root / 'P000' / 'notes.dcm'}: not a DICOM file" in refused(root)


def test_a_file_the_box_cannot_decode_is_named(folder):
    root, _ = folder
    path = root / "P001" / "IM0001.dcm"
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data
    ds.save_as(path)
    assert f"{path}: does not decode through the box's decode" in refused(root)


def test_a_series_without_a_row_is_named(folder):
    root, rows = folder
    write_labels(root, rows[1:])
    message = refused(root)
    assert f"{root / 'P000' / 'IM0001.dcm'}: its series instance uid {rows[0]['series_instance_uid']} has no row in labels.csv" in message


def test_a_row_without_files_is_named_by_its_line(folder):
    root, rows = folder
    shutil.rmtree(root / "P003")
    assert f"labels.csv:5: series_instance_uid {rows[3]['series_instance_uid']} has no DICOM file in the folder" in refused(root)


def test_a_series_labelled_twice_is_named_by_both_lines(folder):
    root, rows = folder
    write_labels(root, [*rows, rows[2]])
    assert f"labels.csv:8: series_instance_uid {rows[2]['series_instance_uid']} is labelled twice (first on line 4)" in refused(root)


def test_the_same_sop_instance_in_two_files_is_named(folder):
    root, _ = folder
    shutil.copy(root / "P002" / "IM0001.dcm", root / "P002" / "IM0002.dcm")
    message = refused(root)
    assert f"{root / 'P002' / 'IM0002.dcm'}: SOP Instance UID" in message and f"is also in {root / 'P002' / 'IM0001.dcm'}" in message


def test_the_same_pixels_under_another_uid_are_named(folder):
    root, rows = folder
    ds = pydicom.dcmread(root / "P004" / "IM0001.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = "1.2.3.4.6"
    ds.save_as(root / "P099.dcm", enforce_file_format=True)
    write_labels(root, [*rows, {**rows[4], "series_instance_uid": "1.2.3.4.6"}])
    message = refused(root)
    assert f"{root / 'P099.dcm'}: the same pixels as {root / 'P004' / 'IM0001.dcm'} under another UID" in message


def test_a_patient_in_two_splits_is_named_by_its_series_never_its_id(folder, tmp_path):
    root, rows = folder
    ds, series = radiograph(seed=5, patient=0, positive=False, side=48)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.9.1"
    ds.SeriesInstanceUID = "1.2.3.9.2"
    ds.PixelData = bytes(len(ds.PixelData))  # another image of patient 0
    ds.save_as(root / "P000" / "second.dcm", enforce_file_format=True)
    write_labels(root, [*rows, {**rows[0], "series_instance_uid": "1.2.3.9.2"}])
    split = tmp_path / "splits.csv"
    split.write_text("series_instance_uid,split\n" + "".join(
        f"{r['series_instance_uid']},{'train' if i < 3 else 'gate'}\n" for i, r in enumerate(rows)) + "1.2.3.9.2,gate\n")
    message = refused(root, split_file=split)
    assert (f"{split}:8: series 1.2.3.9.2 (gate) and series {rows[0]['series_instance_uid']} (line 2, train) are the "
            "same patient's") in message
    assert ds.PatientID not in message


def test_a_split_file_must_deal_every_labelled_series_into_a_known_split(folder, tmp_path):
    root, rows = folder
    split = tmp_path / "splits.csv"
    split.write_text("series_instance_uid,split\n" + f"{rows[0]['series_instance_uid']},holdout\n"
                     + "".join(f"{r['series_instance_uid']},train\n" for r in rows[1:5]))
    message = refused(root, split_file=split)
    assert f"{split}:2: split must be one of train, val, calibration, gate, external, got 'holdout'" in message
    assert f"{split}: series {rows[5]['series_instance_uid']} (labelled in labels.csv) has no split" in message


def test_labels_and_columns_are_checked_by_line(folder):
    root, rows = folder
    bad = [dict(r) for r in rows]
    bad[1]["label"] = "yes"
    bad[2]["finding"] = "maybe"
    bad[3]["finding"] = "negative"  # label 1
    write_labels(root, bad)
    message = refused(root, indication_column="finding", subgroups=("site", "ward"))
    assert "labels.csv: no column 'ward', which the spec names as a subgroup" in message
    assert "labels.csv:3: label must be 0 or 1, got 'yes'" in message
    assert "labels.csv:4: finding must be one of in-indication, negative, sub-indication, got 'maybe'" in message
    assert "labels.csv:5: finding negative contradicts label 1" in message


def test_a_file_of_another_modality_is_named(folder):
    root, _ = folder
    path = root / "P005" / "IM0001.dcm"
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    ds.save_as(path)
    assert f"{path}: modality MR, the spec takes DX" in refused(root)


def test_every_problem_is_listed_in_one_refusal(folder):
    root, rows = folder
    write_labels(root, rows[2:])
    (root / "junk.bin").write_bytes(b"\x00" * 10)
    message = refused(root)
    assert "3 problem(s) found before training" in message

"""A labelled DICOM folder written with plain pydicom (none of the demo generators): small
PA chest radiographs, a bright disc in the positives, and the spec file of a model that
learns to find it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX = "1.2.840.10008.5.1.4.1.1.1.1"
SCANNERS = (("Northwind", "NW-1"), ("Southgate", "SG-2"))
SIDE = 48


def uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in ("folder-test", *parts)]))


def radiograph(seed: int, patient: int, positive: bool, side: int = SIDE) -> tuple[Dataset, str]:
    """One radiograph (a dataset ready to save) and its series UID."""
    rng = np.random.default_rng([seed, patient])
    pixels = 800 + rng.normal(0, 40, (side, side))
    if positive:
        cy, cx = rng.integers(side // 4, 3 * side // 4, 2)
        yy, xx = np.mgrid[:side, :side]
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (side // 6) ** 2] += 1500
    sop = uid(seed, patient, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX, sop
    ds.PatientID, ds.PatientName, ds.PatientAge = f"FT{seed % 1000:03d}{patient:04d}", "TEST^FOLDER", f"{40 + patient % 30:03d}Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(seed, patient, "study"), uid(seed, patient, "series")
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.Manufacturer, ds.ManufacturerModelName = SCANNERS[patient % 2]
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
    return ds, ds.SeriesInstanceUID


def write_folder(folder: Path, seed: int, patients: int) -> list[dict[str, str]]:
    """``patients`` radiographs (every other one positive) and ``labels.csv``; the rows."""
    rows = []
    for p in range(patients):
        positive = p % 2 == 1
        ds, series = radiograph(seed, p, positive)
        path = folder / f"P{p:03d}" / "IM0001.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        rows.append({"series_instance_uid": series, "label": "1" if positive else "0",
                     "finding": "in-indication" if positive else "negative",
                     "site": "north" if p % 3 else "south"})
    write_labels(folder, rows)
    return rows


def write_labels(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


SPEC = """\
[model]
id = "disc-finder-test"
version = "0.1.0"
finding = "bright disc"
finding_code = ["T-D0050", "99TEST", "Bright disc"]
labels = ["no-disc", "disc"]
indication = "A bright disc a sixth of the image across."
intended_use = "Tests of the trainer."
not_for = "Patients."
data_desc = "Radiographs written with pydicom by the test."
limits = "Only the test's images."

[input]
kind = "radiograph"
modalities = ["DX"]
body_part = "CHEST"
sop_class_uids = ["1.2.840.10008.5.1.4.1.1.1.1"]
size = 32

[train]
seed = 7
epochs = 8
lr = 5e-3
keep_last = true
max_shift = 0
widths = [8, 8, 8, 8]

[labels]
indication = "finding"
subgroups = ["site"]

[splits]
{splits}

[targets]
sensitivity = 0.8
sensitivity_lower = 0.5
specificity = 0.8
specificity_lower = 0.5

[sealed]
name = "disc-sealed"
folder = "sealed"
{sealed_sha}

[routing]
name = "chest DX"
modality = ["DX"]
body_part = ["CHEST"]
max_instances = 4

[build]
variants = [["onnxruntime", "fp32"]]
calibration_images = 32
golden_per_class = 1
"""


def write_spec(folder: Path, splits: str = "fractions = [0.5, 0.1, 0.25, 0.15]", sealed_sha: str = "") -> Path:
    """The spec file in ``folder`` (its sealed folder is ``folder/sealed``)."""
    path = folder / "disc.toml"
    path.write_text(SPEC.format(splits=splits, sealed_sha=sealed_sha))
    return path

"""Series builders: synthetic DICOM datasets and files, and synthetic head CTs from the
trainer's generator. Real processes, ports and waits come from :mod:`scripts.harness`."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from training.data.ct_synth import CTConfig, generate_ct_dataset

#: 3-5 mm slices over 100-130 mm (25-43 slices): what tests that only need *a* head CT
#: generate, instead of the generator's realistic mix down to 0.625 mm (up to 224 slices).
ROUTINE_SLICES = {"thicknesses_mm": (3.0, 4.0, 5.0), "coverage_mm": (100.0, 130.0)}


def ct_dataset(study: str, series: str, index: int, size: int = 64, seed: int = 0) -> Dataset:
    """One CT slice (int16, HU) as a complete dataset with file meta."""
    rng = np.random.default_rng(seed + index)
    pixels = rng.normal(40, 12, (size, size)).astype(np.int16)
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "Test^Patient", "TEST001"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "CT", "HEAD", "Head non-contrast"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.tobytes()
    return ds


def write_ct_series(folder: Path, count: int, size: int = 64) -> list[Path]:
    """Write one CT series of ``count`` slices; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.dcm"
        ct_dataset(study, series, i, size).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_mr_series(folder: Path, count: int) -> tuple[str, list[Path]]:
    """An MR series (no routing rule takes it); returns (series UID, files)."""
    from pydicom.uid import MRImageStorage

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = ct_dataset(study, series, i)
        ds.Modality, ds.SOPClassUID = "MR", MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        paths.append(folder / f"mr{i:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return series, paths


# --- in memory, with full headers (the report builders' sources) -------------------------
def _patient_study(ds: Dataset, study: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = "PHANTOM^ALEX", "SYN00042"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19580607", "F", "066Y"
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study, "4711", "ACC000042"
    ds.StudyDate, ds.StudyTime = "20250314", "101500"
    ds.StudyDescription, ds.ReferringPhysicianName = "Emergency study", "REFERRER^SYNTHETIC"
    ds.InstitutionName, ds.Manufacturer = "Synthetic Data Hospital", "Synthetic Modality Co"


def ct_series(count: int = 5, size: int = 64, seed: int = 0) -> list[Dataset]:
    """A head CT series: int16 slices with rescale, axial, 0.5 mm pixels."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    slices = []
    for i in range(count):
        ds = Dataset()
        _patient_study(ds, study)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series, 2, i + 1
        ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "CT", "HEAD", "Head non-contrast"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDate = ds.ContentDate = ds.StudyDate
        ds.SeriesTime = ds.ContentTime = ds.StudyTime
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.ImagePositionPatient = [-16.0, -16.0, 5.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.KVP = [0.5, 0.5], 5.0, 120
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.PixelData = (rng.normal(1064, 15, (size, size))).astype(np.int16).tobytes()
        slices.append(ds)
    return slices


def dx_image(rows: int = 96, columns: int = 64) -> Dataset:
    """A PA chest radiograph, MONOCHROME1 (low values bright), not square."""
    ds = Dataset()
    _patient_study(ds, generate_uid())
    ds.SOPClassUID, ds.SOPInstanceUID = DigitalXRayImageStorageForPresentation, generate_uid()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 1, 1
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation, ds.ImageLaterality = ["L", "F"], "U"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = np.full((rows, columns), 1000, np.uint16).tobytes()
    return ds


def header_only(ds: Dataset) -> Dataset:
    """What ``dcmread(..., stop_before_pixels=True)`` gives: the dataset without pixels."""
    head = copy.deepcopy(ds)
    del head.PixelData
    return head


def pixels(ds: Dataset) -> np.ndarray:
    """Rescaled pixel values of a synthetic source."""
    dtype = np.int16 if ds.PixelRepresentation else np.uint16
    stored = np.frombuffer(ds.PixelData, dtype).reshape(ds.Rows, ds.Columns)
    return stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# --- from the trainer's generator ----------------------------------------------------------
def head_ct(folder: Path, seed: int) -> list[Path]:
    generate_ct_dataset(CTConfig(n_patients=1, seed=seed, **ROUTINE_SLICES), folder, workers=1)
    return sorted(folder.glob("*/CT/*.dcm"))

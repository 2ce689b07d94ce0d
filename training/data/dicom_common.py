"""Shared DICOM building blocks of the synthetic generators: UIDs, people, modules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

_GIVEN = ["ALEX", "SAM", "ROBIN", "KIM", "JORDAN", "CHARLIE", "MORGAN", "TAYLOR", "JAMIE", "RILEY", "NOOR", "ELI"]
_FAMILY = ["PHANTOM", "SYNTHETIC", "TESTCASE", "MODELDATA", "SIMULANT", "DEMOSUBJ"]


def uid(seed: int, *parts: object) -> str:
    """A valid, deterministic UID derived from the seed and the parts (no clashes across parts)."""
    return str(generate_uid(entropy_srcs=[str(seed), *map(str, parts)]))


#: The ages (completed years, inclusive) of every synthetic patient; the demo packages'
#: input constraints restate them, so a model is not asked about patients it never saw.
PATIENT_AGE_YEARS = (18, 89)


def synthetic_patient(rng: np.random.Generator, prefix: str, index: int) -> dict[str, str]:
    """Synthetic, obviously fake patient identity and demographics."""
    age = int(rng.integers(PATIENT_AGE_YEARS[0], PATIENT_AGE_YEARS[1] + 1))
    birth = dt.date(2025 - age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    return {
        "PatientName": f"{_FAMILY[rng.integers(len(_FAMILY))]}^{_GIVEN[rng.integers(len(_GIVEN))]}",
        "PatientID": f"{prefix}{index:05d}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": str(rng.choice(["F", "M"])),
        "PatientAge": f"{age:03d}Y",
    }


def study_datetime(rng: np.random.Generator) -> dt.datetime:
    """A study date and time in 2025."""
    return dt.datetime(2025, 1, 1, 7, 0) + dt.timedelta(days=int(rng.integers(0, 365)), minutes=int(rng.integers(0, 720)))


def new_dataset(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """An empty dataset with file meta (Explicit VR Little Endian) and SOP Common."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TRIAGE_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def add_patient_study(ds: Dataset, patient: dict[str, str], study_uid: str, when: dt.datetime, accession: str) -> None:
    """Patient and General Study modules."""
    for k, v in patient.items():
        setattr(ds, k, v)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.StudyDate, ds.StudyTime
    ds.AccessionNumber = accession
    ds.StudyID = accession[-8:]
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.InstitutionName = "Synthetic Data Hospital"


def set_pixels(ds: Dataset, pixels: np.ndarray, signed: bool, bits_stored: int) -> None:
    """Image Pixel module for a single-frame greyscale image."""
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()


def write(ds: Dataset, path: Path) -> None:
    """Write as a DICOM Part 10 file (preamble, file meta), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)

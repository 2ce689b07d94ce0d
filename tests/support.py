"""Test helpers: synthetic DICOM writers and C-ECHO; the real processes, ports and waits
come from :mod:`scripts.harness` (shared with the benchmarks) and are re-exported here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from scripts.harness import (  # noqa: F401  (re-exported for the tests)
    READY_TIMEOUT_S,
    REPO,
    ApplianceProcess,
    free_port,
    stop_process,
    tcp_env,
    wait_for_port,
    wait_until,
)

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


def echo(port: int, ae_title: str = "TRIAGE") -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


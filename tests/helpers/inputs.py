"""Model-input test material: a valid manifest for any input spec, and a CT series that
mixes transfer syntaxes and a multi-frame instance (the prepared-on-arrival tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from appliance.models.manifest import FileEntry, InputSpec, Manifest, public_key_b64

SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless)
SERIES = "1.2.826.0.1.3680043.10.1.22"


def manifest_for(spec: InputSpec) -> Manifest:
    """A valid manifest whose input is ``spec``."""
    listed = ("model.onnx", "golden.npz", "drift.json", "card.md")
    return Manifest.model_validate({
        "format_version": 1, "id": "prepared", "version": "0.0.1", "task": "binary-triage", "finding": "test",
        "labels": ["absent", "present"], "input": spec.model_dump(), "outputs": {"cam_size": 4},
        "aggregation": {"method": "max"},
        "operating_point": {"threshold": 0.5, "target_sensitivity": 0.9, "validation_sensitivity": 0.9,
                            "validation_specificity": 0.9},
        "variants": [{"backend": "onnxruntime", "precision": "fp32", "files": ["model.onnx"], "test_auc": 0.9,
                      "tolerance": {"score_atol": 1e-4, "cam_atol": 1e-3}}],
        "golden": "golden.npz", "drift_reference": "drift.json", "model_card": "card.md",
        "files": [FileEntry(path=name, size=0, sha256="0" * 64).model_dump() for name in listed],
        "signing_public_key": public_key_b64(Ed25519PrivateKey.generate().public_key()),
        "created": "2026-12-06T00:00:00Z",
    })


def instance(z: float, pixels: np.ndarray, syntax: str, intercept: float) -> Dataset:
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.3680043.10.1.2", SERIES, "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    ds.PixelData = pixels.astype(np.int16).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    return ds


def mixed_series(folder: Path) -> list[Path]:
    """Twelve single-frame slices 1 mm apart in four transfer syntaxes, and a three-frame
    instance beyond them (frames at 12, 13, 14 mm), each file named in no slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(22)
    datasets = [instance(float(z), rng.integers(0, 2000, (48, 40)), SYNTAXES[z % 4], -1024.0 + 10 * z)
                for z in range(12)]
    datasets.append(instance(12.0, rng.integers(0, 2000, (3, 48, 40)), RLELossless, -1000.0))
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(folder / f"{(n * 7) % 13:02d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths

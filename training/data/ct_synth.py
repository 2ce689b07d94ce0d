"""Synthetic non-contrast head CT with intracranial-haemorrhage-like findings.

Each patient gets one study with one axial series written as CT Image Storage DICOM
(int16, RescaleSlope/Intercept), one file per slice. Anatomy in Hounsfield units: air,
scalp, a two-table skull with diploe, a CSF rim, brain with grey/white texture,
ventricles and a falx. Half the patients (by default) carry one finding, 50-90 HU:

* an intraparenchymal blob (ellipsoid, 6-35 mm), or
* a subdural crescent along the inner table, tapering in angle and height;

a quarter of the findings are low contrast (50-58 HU). Scanners differ in noise,
resolution, kernel sharpening and rescale parameters (:data:`CT_STYLES`); slice count,
thickness, pixel spacing and field of view vary per patient.

Truth is taken from the rendered lesion mask: a slice is positive when its lesion area is
at least :data:`MIN_SLICE_LESION_MM2`; the series label is positive when any slice is; the
size bucket is from the rendered volume (:func:`size_bucket`). The folder gets
``labels.csv`` (``series_instance_uid,label,size_bucket,lesion_type,contrast``; contrast
``low`` for 50-58 HU findings, ``standard`` above, ``none`` for negatives; mimic, for
every patient, one of :data:`MIMICS` or ``none``) and
``slice_labels.csv`` (``sop_instance_uid,label``), the format
:mod:`training.data.folder` reads. Everything is a function of ``(seed, patient index)``.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from scipy import ndimage

from training.data import dicom_common as dc

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MIN_SLICE_LESION_MM2 = 10.0


@dataclass(frozen=True)
class ScannerStyle:
    """How one (fictional) scanner model renders and stores a slice."""

    manufacturer: str
    model: str
    kernel: str
    noise_hu: float
    psf_sigma_px: float
    noise_corr_px: float
    sharpen: float
    slope: float
    intercept: float


CT_STYLES: tuple[ScannerStyle, ...] = (
    ScannerStyle("Acme Medical", "HeadScan 16", "H30s", 4.0, 1.0, 1.2, 0.0, 1.0, -1024.0),
    ScannerStyle("Borealis Systems", "Aurora 64", "SHARP", 6.5, 0.6, 0.5, 0.6, 1.0, 0.0),
    ScannerStyle("Cobalt Imaging", "CX 128", "STANDARD", 5.0, 0.8, 0.8, 0.2, 0.5, -1024.0),
    ScannerStyle("Delta Tomography", "DT Vista", "B40f", 5.5, 0.9, 1.0, 0.35, 1.0, -8192.0),
)
#: The scanner style the demo builds hold out of training entirely (external validation).
CT_EXTERNAL_STYLE = "Delta Tomography DT Vista"


@dataclass(frozen=True)
class CTConfig:
    """Size of a synthetic head-CT dataset."""

    n_patients: int
    seed: int
    matrix: int = 256
    fov_mm: tuple[float, float] = (200.0, 250.0)
    coverage_mm: tuple[float, float] = (100.0, 130.0)
    thicknesses_mm: tuple[float, ...] = (3.0, 4.0, 5.0)
    positive_fraction: float = 0.5


@dataclass(frozen=True)
class SeriesTruth:
    """Ground truth of one generated series."""

    patient_id: str
    series_uid: str
    label: int
    size_bucket: str
    lesion_type: str
    scanner: str
    contrast: str
    mimic: str
    slice_uids: tuple[str, ...]
    slice_labels: tuple[int, ...]


def size_bucket(volume_ml: float) -> str:
    """Lesion-size bucket from volume: ``small`` < 1 mL <= ``medium`` < 5 mL <= ``large``."""
    if volume_ml <= 0:
        return "none"
    return "small" if volume_ml < 1.0 else "medium" if volume_ml < 5.0 else "large"


def generate_ct_dataset(cfg: CTConfig, out_dir: Path, workers: int | None = None) -> list[SeriesTruth]:
    """Write ``cfg.n_patients`` head-CT series under ``out_dir`` plus the label files.

    Patients are generated in ``workers`` processes (default: one per CPU); the output
    does not depend on the number of workers.
    """
    out_dir = Path(out_dir)
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        truths = list(ex.map(_generate_patient, repeat(cfg), range(cfg.n_patients), repeat(out_dir)))
    with open(out_dir / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series_instance_uid", "label", "size_bucket", "lesion_type", "contrast", "mimic"])
        for t in truths:
            w.writerow([t.series_uid, t.label, t.size_bucket, t.lesion_type, t.contrast, t.mimic])
    with open(out_dir / "slice_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sop_instance_uid", "label"])
        for t in truths:
            w.writerows(zip(t.slice_uids, t.slice_labels))
    return truths


@dataclass(frozen=True)
class _Head:
    a: float
    b: float
    c: float
    skull: float
    csf: float
    angle: float
    shift: tuple[float, float]
    brain_hu: float
    falx_hu: float


def _sample_head(rng: np.random.Generator) -> _Head:
    return _Head(
        a=rng.uniform(68, 78), b=rng.uniform(86, 98), c=rng.uniform(78, 88),
        skull=rng.uniform(5, 8), csf=rng.uniform(1.0, 3.0), angle=np.deg2rad(rng.uniform(-8, 8)),
        shift=(rng.uniform(-8, 8), rng.uniform(-8, 8)), brain_hu=rng.uniform(30, 37),
        falx_hu=rng.uniform(40, 60),
    )


def _sample_lesion(rng: np.random.Generator, head: _Head, slice_z: np.ndarray) -> dict:
    k = int(rng.integers(int(0.25 * len(slice_z)), max(int(0.75 * len(slice_z)), int(0.25 * len(slice_z)) + 1)))
    thickness = float(slice_z[1] - slice_z[0]) if len(slice_z) > 1 else 5.0
    zc = float(slice_z[k] + rng.uniform(-thickness / 4, thickness / 4))
    hu = rng.uniform(50, 58) if rng.random() < 0.25 else rng.uniform(50, 90)
    if rng.random() < 0.6:
        d = [rng.uniform(6, 12), rng.uniform(12, 20), rng.uniform(20, 35)][rng.integers(3)]
        f = np.sqrt(max(0.0, 1 - (zc / head.c) ** 2))
        r, phi = 0.55 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        return {"type": "intraparenchymal", "hu": hu, "zc": zc,
                "xc": r * (head.a - head.skull) * f * np.cos(phi), "yc": r * (head.b - head.skull) * f * np.sin(phi),
                "rx": d / 2 * rng.uniform(0.8, 1.2), "ry": d / 2 * rng.uniform(0.8, 1.2), "rz": d / 2 * rng.uniform(0.8, 1.2)}
    return {"type": "subdural", "hu": hu, "zc": zc, "phi": rng.uniform(0, 2 * np.pi),
            "half_width": np.deg2rad(rng.uniform(25, 55)), "tmax": rng.uniform(3, 14), "hz": rng.uniform(15, 35)}


#: Hard negatives (and distractors beside a finding): name -> share of patients.
MIMICS = {"calcification": 0.2, "dense_sinus": 0.1, "streak": 0.1}


def _sample_mimic(rng: np.random.Generator) -> dict | None:
    """A mimic of haemorrhage drawn for any patient, positive or not (truth is unaffected).

    ``calcification``: pineal, choroid plexus and falx calcifications, 150-700 HU;
    ``dense_sinus``: a hyperdense superior sagittal / transverse sinus, 60-75 HU, at the
    blood's own density; ``streak``: beam-hardening streaks across the posterior fossa.
    """
    u, edge = rng.random(), 0.0
    for name, share in MIMICS.items():
        edge += share
        if u < edge:
            return {"type": name, "hu": rng.uniform(150, 700) if name == "calcification" else rng.uniform(60, 75),
                    "angle": rng.uniform(-0.4, 0.4), "falx_z": rng.uniform(25, 45)}
    return None


def _add_mimic(hu: np.ndarray, mimic: dict, x: np.ndarray, y: np.ndarray, z: float, ai: float, bi: float,
               brain: np.ndarray) -> None:
    """Paint the mimic into the slice at height ``z`` in place."""
    if mimic["type"] == "calcification":
        if 0 < z < 14:  # pineal
            hu[((x ** 2 + (y - 8) ** 2) <= 3.0 ** 2) & brain] = mimic["hu"]
        if 8 < z < 24:  # choroid plexus of both atria
            for sx in (-1, 1):
                hu[(((x - sx * 11) ** 2 + (y - 14) ** 2) <= 2.5 ** 2) & brain] = 0.6 * mimic["hu"]
        if abs(z - mimic["falx_z"]) < 4:  # falx plaque
            hu[(np.abs(x) < 1.2) & (np.abs(y + 0.4 * bi) < 4) & brain] = mimic["hu"]
    elif mimic["type"] == "dense_sinus":
        posterior = y > 0
        rim = np.sqrt((x / ai) ** 2 + (y / bi) ** 2)
        hu[(np.abs(x) < 3.5) & posterior & (rim > 0.9) & (rim <= 1.0)] = mimic["hu"]
        if z < 5:  # transverse sinuses
            hu[posterior & (rim > 0.92) & (rim <= 1.0) & (np.abs(y) < 0.5 * bi)] = mimic["hu"]
    elif mimic["type"] == "streak" and z < -10:
        along = np.cos(mimic["angle"]) * y - np.sin(mimic["angle"]) * x
        hu[brain] += (40.0 * np.sin(along / 1.5) * np.exp(-np.abs(np.sin(mimic["angle"]) * y + np.cos(mimic["angle"]) * x) / 12))[brain]


def _render(head: _Head, lesion: dict | None, z: float, n: int, spacing: float,
            rng: np.random.Generator, mimic: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HU image (before scanner effects) and lesion mask of the slice at height ``z``."""
    ax = (np.arange(n) - (n - 1) / 2) * spacing
    X, Y = np.meshgrid(ax, ax)
    X, Y = X - head.shift[0], Y - head.shift[1]
    ca, sa = np.cos(head.angle), np.sin(head.angle)
    x, y = ca * X + sa * Y, -sa * X + ca * Y
    f = np.sqrt(max(0.0, 1 - (z / head.c) ** 2))
    hu = np.full((n, n), -1000.0)
    mask = np.zeros((n, n), bool)
    if f < 0.2:
        return hu, mask

    def inside(a: float, b: float) -> np.ndarray:
        return (x / max(a, 1e-3)) ** 2 + (y / max(b, 1e-3)) ** 2 <= 1.0

    ao, bo = head.a * f, head.b * f
    ai, bi = ao - head.skull, bo - head.skull
    hu[inside(ao + 4, bo + 4)] = 30.0
    hu[inside(ao, bo)] = 1600.0
    hu[inside(ao - head.skull * 0.3, bo - head.skull * 0.3) & ~inside(ai + head.skull * 0.3, bi + head.skull * 0.3)] = 750.0
    hu[inside(ai, bi)] = 7.0
    brain = inside(ai - head.csf, bi - head.csf)
    texture = ndimage.zoom(rng.normal(0, 1, (8, 8)), n / 8, order=3)[:n, :n]
    hu[brain] = (head.brain_hu + 3.0 * texture)[brain]
    if -15 < z < 30:
        g = np.sqrt(max(0.0, 1 - ((z - 7) / 23) ** 2))
        for sx in (-1, 1):
            hu[(((x - sx * 9) / (5 * g + 1e-3)) ** 2 + ((y + 4) / (18 * g + 1e-3)) ** 2 <= 1) & brain] = 6.0
    if z > 20:
        hu[(np.abs(x) < 1.0) & (y > 0.25 * bi) & brain] = head.falx_hu
    if mimic is not None:
        _add_mimic(hu, mimic, x, y, z, ai, bi, brain)
    if lesion is not None:
        w = _lesion_weight(lesion, x, y, z, ai, bi)
        w = w * inside(ai, bi)
        hu = hu * (1 - w) + lesion["hu"] * w
        mask = w > 0.5
    return hu, mask


def _lesion_weight(les: dict, x: np.ndarray, y: np.ndarray, z: float, ai: float, bi: float) -> np.ndarray:
    """Soft lesion occupancy in [0, 1] (edge about 1 mm wide)."""
    if les["type"] == "intraparenchymal":
        r = np.sqrt(((x - les["xc"]) / les["rx"]) ** 2 + ((y - les["yc"]) / les["ry"]) ** 2 + ((z - les["zc"]) / les["rz"]) ** 2)
        return np.clip((1 - r) * min(les["rx"], les["ry"]), 0, 1)
    rho = np.sqrt(x ** 2 + y ** 2) + 1e-6
    rn = np.sqrt((x / ai) ** 2 + (y / bi) ** 2) + 1e-6
    depth = rho / rn - rho
    ang = np.angle(np.exp(1j * (np.arctan2(y, x) - les["phi"])))
    prof = np.where(np.abs(ang) < les["half_width"], np.cos(np.pi / 2 * ang / les["half_width"]), 0.0)
    zp = np.sqrt(max(0.0, 1 - ((z - les["zc"]) / les["hz"]) ** 2))
    return np.clip(les["tmax"] * prof * zp - depth, 0, 1)


def _scanner(hu: np.ndarray, style: ScannerStyle, rng: np.random.Generator) -> np.ndarray:
    """Apply resolution, kernel and noise of the scanner; return stored int16 values."""
    img = ndimage.gaussian_filter(hu, style.psf_sigma_px)
    if style.sharpen:
        img = img + style.sharpen * (img - ndimage.gaussian_filter(img, 1.5))
    noise = rng.standard_normal(hu.shape)
    noise = ndimage.gaussian_filter(noise, style.noise_corr_px)
    img = img + noise / (noise.std() + 1e-9) * style.noise_hu
    img = np.clip(img, -1024, 3071)
    return np.round((img - style.intercept) / style.slope).astype(np.int16)


def _generate_patient(cfg: CTConfig, index: int, out_dir: Path) -> SeriesTruth:
    rng = np.random.default_rng([cfg.seed, 1, index])
    style = CT_STYLES[index % len(CT_STYLES)]
    patient = dc.synthetic_patient(rng, "CTSYN", index)
    when = dc.study_datetime(rng)
    study_uid, series_uid, frame_uid = (dc.uid(cfg.seed, "ct", index, k) for k in ("study", "series", "frame"))
    head = _sample_head(rng)
    thickness = float(rng.choice(cfg.thicknesses_mm))
    n_slices = max(3, int(round(rng.uniform(*cfg.coverage_mm) / thickness)))
    slice_z = -0.72 * head.c + thickness * np.arange(n_slices)
    spacing = rng.uniform(*cfg.fov_mm) / cfg.matrix
    positive = rng.random() < cfg.positive_fraction
    lesion = _sample_lesion(rng, head, slice_z) if positive else None
    mimic = _sample_mimic(rng)
    min_px = max(1.0, MIN_SLICE_LESION_MM2 / spacing ** 2)
    uids, labels, volume_mm3 = [], [], 0.0
    for i, z in enumerate(slice_z):
        hu, mask = _render(head, lesion, float(z), cfg.matrix, spacing, rng, mimic)
        stored = _scanner(hu, style, rng)
        volume_mm3 += mask.sum() * spacing ** 2 * thickness
        sop_uid = dc.uid(cfg.seed, "ct", index, "sop", i)
        ds = dc.new_dataset(CT_IMAGE_STORAGE, sop_uid)
        dc.add_patient_study(ds, patient, study_uid, when, f"SYNCT{index:07d}")
        _ct_modules(ds, style, series_uid, frame_uid, i, float(z), thickness, spacing, cfg.matrix)
        dc.set_pixels(ds, stored, signed=True, bits_stored=16)
        dc.write(ds, out_dir / patient["PatientID"] / "CT" / f"IM{i + 1:04d}.dcm")
        uids.append(sop_uid)
        labels.append(int(mask.sum() >= min_px))
    label = int(any(labels))
    return SeriesTruth(
        patient_id=patient["PatientID"], series_uid=series_uid, label=label,
        size_bucket=size_bucket(volume_mm3 / 1000.0) if label else "none",
        lesion_type=lesion["type"] if label else "none",
        contrast=("low" if lesion["hu"] < 58 else "standard") if label else "none",
        mimic=mimic["type"] if mimic else "none",
        scanner=f"{style.manufacturer} {style.model}", slice_uids=tuple(uids), slice_labels=tuple(labels),
    )


def _ct_modules(ds, style: ScannerStyle, series_uid: str, frame_uid: str, i: int, z: float,
                thickness: float, spacing: float, n: int) -> None:
    """General Series, Frame of Reference, Equipment, General Image, Image Plane, CT Image."""
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 2
    ds.SeriesDescription = "HEAD W/O CONTRAST"
    ds.StudyDescription = "CT HEAD WITHOUT CONTRAST"
    ds.ProtocolName = "ROUTINE HEAD"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = style.manufacturer
    ds.ManufacturerModelName = style.model
    ds.StationName = "SYNTHCT1"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "synthetic-1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = i + 1
    ds.AcquisitionNumber = 1
    corner = round(-(n - 1) / 2 * spacing, 4)
    ds.ImagePositionPatient = [corner, corner, round(z, 3)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(z, 3)
    ds.SliceThickness = thickness
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = style.intercept
    ds.RescaleSlope = style.slope
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.XRayTubeCurrent = 250
    ds.ConvolutionKernel = style.kernel
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    ds.BurnedInAnnotation = "NO"

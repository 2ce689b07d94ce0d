"""Synthetic PA chest radiographs (Computed Radiography) with a pneumothorax-like finding.

One CR Image Storage instance per study. The image is a density map (air, soft tissue,
lungs with vascular markings, heart and mediastinum, spine, ribs, clavicles, diaphragm
domes) blurred by the detector and given quantum-like noise. A positive image has one
lung collapsed away from the chest wall: an air rim (4-50 mm) without lung markings and a
visceral pleural line; a third of them apical only (an air cap over the apex, the lung
below it down), a third subtle (rim barely darker, faint line). Detectors differ in bit
depth, gamma, noise and photometric interpretation (:data:`CR_STYLES`, one of them
MONOCHROME1); matrix size and pixel spacing vary over the range of real cassettes and
panels (by default 2000-3000 columns at 0.12-0.22 mm). The anatomy is drawn on a coarser
grid (about 0.7-0.9 mm), blurred by the detector there and interpolated up to the stored
matrix, where the quantum noise is added pixel by pixel. Each image is stored JPEG-LS
lossless, as PACS often keep radiographs (ten million noisy pixels: about half the bytes).

Labels: ``labels.csv`` (``series_instance_uid``, ``label`` and :data:`LABEL_COLUMNS`):
``label`` 1 for any pneumothorax, its class under the product's indication
(:func:`training.indication.chest_indication`, by rim width), the rim width in mm and its
size group (:func:`training.indication.rim_group`); lesion type ``apical`` or ``lateral``
for positives; contrast ``subtle`` or ``standard`` for positives, ``none`` for negatives;
mimic, for every patient, one of :data:`MIMICS` or ``none``. Deterministic per (seed, index).
"""

from __future__ import annotations

import csv
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from pydicom.uid import JPEGLSLossless
from scipy import ndimage

from training import indication
from training.data import dicom_common as dc

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


@dataclass(frozen=True)
class DetectorStyle:
    """How one (fictional) CR reader renders and stores an image (``blur_mm``: the
    detector's point spread, ``noise``: per-pixel quantum noise at the stored matrix)."""

    manufacturer: str
    model: str
    bits: int
    gamma: float
    noise: float
    blur_mm: float
    photometric: str


CR_STYLES: tuple[DetectorStyle, ...] = (
    DetectorStyle("Acme Medical", "FlexCR 2", 12, 1.0, 0.015, 1.2, "MONOCHROME2"),
    DetectorStyle("Borealis Systems", "ClearView CR", 12, 0.8, 0.022, 0.85, "MONOCHROME1"),
    DetectorStyle("Cobalt Imaging", "CX Digitizer", 10, 1.2, 0.018, 1.55, "MONOCHROME2"),
    DetectorStyle("Delta Tomography", "DR Panel 43", 14, 0.9, 0.016, 1.0, "MONOCHROME2"),
)
#: The detector style the demo builds hold out of training entirely (external validation).
CR_EXTERNAL_STYLE = "Delta Tomography DR Panel 43"


@dataclass(frozen=True)
class CRConfig:
    """Size of a synthetic chest-radiograph dataset."""

    n_patients: int
    seed: int
    #: Stored columns, drawn per image; rows are 1.0, 1.1 or 1.2 times the columns.
    columns: tuple[int, int] = (2000, 3000)
    fov_mm: tuple[float, float] = (350.0, 430.0)
    positive_fraction: float = 0.5
    #: Columns of the grid the anatomy is drawn on (at most the stored columns).
    render_columns: int = 480


@dataclass(frozen=True)
class ImageTruth:
    """Ground truth of one generated radiograph (a one-image series)."""

    patient_id: str
    series_uid: str
    label: int
    indication: str
    size_group: str
    scanner: str
    rim_mm: float = 0.0
    contrast: str = "none"
    mimic: str = "none"
    lesion_type: str = "none"


#: The columns of ``labels.csv``, after ``series_instance_uid`` and ``label``.
LABEL_COLUMNS = ("indication", "size_group", "lesion_type", "contrast", "mimic", "rim_mm", "scanner")


def generate_cr_dataset(cfg: CRConfig, out_dir: Path, workers: int | None = None) -> list[ImageTruth]:
    """Write ``cfg.n_patients`` chest radiographs under ``out_dir`` plus ``labels.csv``.

    Generated in ``workers`` processes (default: one per CPU); output is independent of it.
    """
    out_dir = Path(out_dir)
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        truths = list(ex.map(_generate_patient, repeat(cfg), range(cfg.n_patients), repeat(out_dir)))
    with open(out_dir / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series_instance_uid", "label", *LABEL_COLUMNS])
        for t in truths:
            w.writerow([t.series_uid, t.label, *(f"{v:.3f}" if isinstance(v, float) else v
                                                  for v in (getattr(t, c) for c in LABEL_COLUMNS))])
    return truths


#: Hard negatives (and distractors beside a finding): name -> share of patients.
MIMICS = {"skin_fold": 0.2, "line": 0.2, "scapula": 0.1}


def _sample_mimic(rng: np.random.Generator) -> dict | None:
    """A pneumothorax mimic for any patient (truth is unaffected): ``skin_fold``, a curved
    soft-tissue edge over the lateral lung that looks like a pleural line; ``line``, a
    catheter or tube crossing the chest; ``scapula``, a medial scapular border over the
    upper lung."""
    u, edge = rng.random(), 0.0
    for name, share in MIMICS.items():
        edge += share
        if u < edge:
            return {"type": name, "side": int(rng.choice([-1, 1])), "offset": rng.uniform(15, 45),
                    "strength": rng.uniform(0.05, 0.1), "bend": rng.uniform(-0.004, 0.004)}
    return None


def _add_mimic(d: np.ndarray, mimic: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    side, k = mimic["side"], mimic["strength"]
    if mimic["type"] == "skin_fold":
        edge_x = side * (150 - mimic["offset"]) + mimic["bend"] * (y + 20) ** 2 * side
        inside = (x - edge_x) * side < 0
        near = np.abs(x - edge_x) < 1.5
        band = inside & (np.abs(x - edge_x) < 25) & (np.abs(y + 20) < 110)
        return np.where(band, d + k * 0.5 * (1 - np.abs(x - edge_x) / 25), d) + np.where(near & (np.abs(y + 20) < 110), k, 0)
    if mimic["type"] == "line":
        path_x = side * (30 + mimic["offset"]) + 60 * mimic["bend"] * (y + 100) ** 1.0
        return np.where((np.abs(x - path_x) < 1.2) & (y > -160) & (y < 60), d + 2 * k, d)
    border = side * (95 - mimic["offset"] / 3) + 0.25 * (y + 120) * side
    return np.where(((x - border) * side > 0) & (y < -40) & (y > -150) & (np.abs(x) < 175), d + k, d)


def _chest(rng: np.random.Generator, rows: int, cols: int, spacing: float, ptx: dict | None,
           mimic: dict | None = None) -> np.ndarray:
    """Density map in [0, 1] (1 = dense) of a PA chest; coordinates in mm, origin at centre.

    ``ptx`` (pneumothorax) collapses one lung away from the chest wall by ``rim`` mm: the
    rim holds only air (darker, no lung markings) and the collapsed lung's edge shows as a
    thin visceral pleural line.
    """
    y = (np.arange(rows) - rows / 2)[:, None] * spacing + rng.uniform(-15, 15)
    x = (np.arange(cols) - cols / 2)[None, :] * spacing + rng.uniform(-15, 15)
    half_w = rng.uniform(150, 175)
    d = np.full((rows, cols), 0.04)
    d = np.where((x / half_w) ** 2 + ((y - 60) / 320) ** 2 <= 1, 0.45, d)
    lung_w, lung_h, dome = rng.uniform(55, 70), rng.uniform(105, 125), rng.uniform(25, 40)
    markings = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), 2.5 / spacing)
    markings = 0.035 * markings / (markings.std() + 1e-9)
    for side in (-1, 1):
        cx = side * rng.uniform(70, 85)
        lung = _lung(x, y, cx, lung_w, lung_h, dome)
        d = np.where(lung, 0.16 + markings, d)
        if ptx is not None and ptx["side"] == side:
            rim = ptx["rim"]
            collapsed = _lung(x, y, cx - side * rim / 2, lung_w - rim / 2, lung_h - rim / 2, dome)
            # an apical pneumothorax is a cap of air over the apex only, below it the lung is down
            where = lung if not ptx["apical"] else lung & (y < -10 - lung_h + ptx["apex_mm"])
            d = np.where(where & ~collapsed, ptx["air"], d)
            edge = collapsed & ~_lung(x, y, cx - side * rim / 2, lung_w - rim / 2 - 1.5, lung_h - rim / 2 - 1.5, dome)
            d = np.where(where & edge, d + ptx["line"], d)
    heart = ((x - rng.uniform(10, 25)) / rng.uniform(55, 70)) ** 2 + ((y - 55) / rng.uniform(45, 55)) ** 2 <= 1
    d = np.where(heart, 0.5, d)
    d = np.where((np.abs(x) < 22) & (y < 40), np.maximum(d, 0.5), d)
    d = np.where(np.abs(x) < 12, np.maximum(d, 0.62), d)
    pitch = rng.uniform(22, 27)
    for k in range(10):
        for side in (-1, 1):
            curve = -110 + k * pitch + 0.006 * (x - side * 20) ** 2 * side * np.sign(x)
            band = (np.abs(y - curve) < 4.5) & (x * side > 10) & (np.abs(x) < half_w - 5) & (y < 110)
            d = np.where(band, d + 0.1, d)
    for side in (-1, 1):
        clav = (np.abs(y - (-125 + 0.25 * np.abs(x))) < 6) & (x * side > 15) & (np.abs(x) < 120)
        d = np.where(clav, d + 0.15, d)
    if mimic is not None:
        d = _add_mimic(d, mimic, x, y)
    return np.clip(d, 0, 1)


def _lung(x: np.ndarray, y: np.ndarray, cx: float, w: float, h: float, dome: float) -> np.ndarray:
    """One lung field: an ellipse cut from below by the diaphragm dome."""
    ell = ((x - cx) / w) ** 2 + ((y + 10) / h) ** 2 <= 1
    below_dome = y > (h - 10 - dome) + dome * ((x - cx) / w) ** 2 - dome
    return ell & ~below_dome


#: Rows of a radiograph relative to its columns.
ROW_FACTORS = (1.0, 1.1, 1.2)
#: Share of pneumothoraces that are apical only (an air cap over the lung apex).
APICAL_SHARE = 0.35
#: Share of pneumothoraces that are subtle: the rim barely darker than lung, a faint line.
SUBTLE_SHARE = 0.35


def _sample_pneumothorax(rng: np.random.Generator) -> dict:
    rim = [rng.uniform(4, 15), rng.uniform(15, 30), rng.uniform(30, 50)][rng.integers(3)]
    subtle = rng.random() < SUBTLE_SHARE
    apical = rng.random() < APICAL_SHARE
    return {"side": int(rng.choice([-1, 1])), "rim": rim, "subtle": subtle, "apical": apical,
            "apex_mm": rng.uniform(rim + 10, rim + 35),
            "air": rng.uniform(0.10, 0.13) if subtle else rng.uniform(0.03, 0.07),
            "line": rng.uniform(0.025, 0.045) if subtle else rng.uniform(0.06, 0.12)}


def detector_image(density: np.ndarray, render_spacing: float, shape: tuple[int, int], style: DetectorStyle,
              rng: np.random.Generator) -> np.ndarray:
    """Blur the density map (drawn at ``render_spacing`` mm) and apply the reader's gamma,
    interpolate it to the stored ``shape`` (bilinear), add quantum noise there and store it
    at the style's bit depth.

    A sealed set is registered by its hash and regenerated on other machines, so every step
    is one that gives the same bits on any x86-64 CPU: float64 throughout, only correctly
    rounded arithmetic and square roots on the full-size image, and the one transcendental
    step (the gamma) through the C library's ``pow`` rather than NumPy's SIMD kernels,
    whose last bit may differ between AVX2 and AVX-512 (torch's kernels promise no more)."""
    img = ndimage.gaussian_filter(density.astype(np.float64), style.blur_mm / render_spacing)
    img = _libm_pow(np.clip(img, 0, 1), style.gamma)
    full = bilinear(img, shape)
    noise = np.random.default_rng(int(rng.integers(2 ** 62))).standard_normal(shape)
    full += noise * style.noise * np.sqrt(1.05 - np.clip(full, 0, 1))
    np.clip(full, 0, 1, out=full)
    if style.photometric == "MONOCHROME1":
        full = 1 - full
    top = 2 ** style.bits - 1
    return np.rint(full * top).astype(np.uint16)


def _libm_pow(values: np.ndarray, exponent: float) -> np.ndarray:
    return np.frompyfunc(lambda v: math.pow(v, exponent), 1, 1)(values).astype(np.float64)


def bilinear(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``img`` resampled to ``shape`` by bilinear interpolation with pixel centres aligned
    (torch's ``align_corners=False``; pure, float64)."""
    out = img
    for axis, size in enumerate(shape):
        n = img.shape[axis]
        centre = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
        low = np.minimum(np.floor(centre).astype(np.intp), n - 1)
        high = np.minimum(low + 1, n - 1)
        weight = centre - low
        weight = weight.reshape((-1, 1) if axis == 0 else (1, -1))
        out = np.take(out, low, axis=axis) * (1 - weight) + np.take(out, high, axis=axis) * weight
    return out


def _generate_patient(cfg: CRConfig, index: int, out_dir: Path) -> ImageTruth:
    rng = np.random.default_rng([cfg.seed, 2, index])
    style = CR_STYLES[index % len(CR_STYLES)]
    patient = dc.synthetic_patient(rng, "CRSYN", index)
    when = dc.study_datetime(rng)
    cols = int(rng.integers(cfg.columns[0], cfg.columns[1] + 1))
    row_factor = float(rng.choice(ROW_FACTORS))
    rows = int(cols * row_factor)
    spacing = rng.uniform(*cfg.fov_mm) / cols
    positive = rng.random() < cfg.positive_fraction
    ptx = _sample_pneumothorax(rng) if positive else None
    mimic = _sample_mimic(rng)
    render_cols = min(cols, cfg.render_columns)
    render_spacing = spacing * cols / render_cols
    density = _chest(rng, int(render_cols * row_factor), render_cols, render_spacing, ptx, mimic)
    pixels = detector_image(density, render_spacing, (rows, cols), style, rng)
    study_uid, series_uid, sop_uid = (dc.uid(cfg.seed, "cr", index, k) for k in ("study", "series", "sop"))
    ds = dc.new_dataset(CR_IMAGE_STORAGE, sop_uid)
    dc.add_patient_study(ds, patient, study_uid, when, f"SYNCR{index:07d}")
    ds.Modality = "CR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "CHEST PA"
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.Manufacturer = style.manufacturer
    ds.ManufacturerModelName = style.model
    ds.StationName = "SYNTHCR1"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ImagerPixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.PhotometricInterpretation = style.photometric
    ds.BurnedInAnnotation = "NO"
    dc.set_pixels(ds, pixels, signed=False, bits_stored=style.bits)
    # As PACS often store radiographs: half the bytes, the same pixels. pydicom gives the
    # compressed instance a new, random SOP Instance UID unless told not to, and a random
    # UID made every generated set differ from the last: the sealed set's hash with it.
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    dc.write(ds, out_dir / patient["PatientID"] / "CR" / "IM0001.dcm")
    return ImageTruth(
        patient_id=patient["PatientID"], series_uid=series_uid, label=int(positive),
        indication=indication.chest_indication(ptx["rim"] if positive else 0.0).value,
        size_group=indication.rim_group(ptx["rim"]) if positive else "none", rim_mm=float(ptx["rim"]) if positive else 0.0,
        scanner=f"{style.manufacturer} {style.model}",
        contrast=("subtle" if ptx["subtle"] else "standard") if positive else "none",
        lesion_type=("apical" if ptx["apical"] else "lateral") if positive else "none",
        mimic=mimic["type"] if mimic else "none",
    )

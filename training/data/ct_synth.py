"""Synthetic non-contrast head CT with intracranial-haemorrhage-like findings.

Each patient gets one study with one axial series written as CT Image Storage DICOM
(int16, RescaleSlope/Intercept), one file per slice. Anatomy in Hounsfield units: air,
scalp, a two-table skull with diploe, a CSF rim, brain with grey/white texture,
ventricles and a falx. Half the patients (by default) carry one finding, 50-90 HU:

* an intraparenchymal blob (ellipsoid, 6-35 mm), or
* a subdural crescent along the inner table, tapering in angle and height;

a quarter of the findings are low contrast (50-58 HU). Scanners differ in noise,
resolution, kernel sharpening and rescale parameters (:data:`CT_STYLES`); slice count,
thickness, pixel spacing and field of view vary per patient over the ranges of routine
head CT (by default 512 x 512, 0.40-0.50 mm pixels, 0.625-5 mm slices). Noise grows as
slices get thinner (as 1/sqrt(thickness)), and a slice averages the lesion over its
thickness (partial volume), so a small haemorrhage is faint in a 5 mm slice.

Series truth is the finding as drawn: ``label`` 1 for any finding, and its class under
the product's indication (:mod:`training.indication`: in-indication, sub-indication or
negative) from the intraparenchymal volume (the ellipsoid's) or the subdural thickness at
its thickest. Slice truth is what each slice shows: a slice is positive when the lesion,
averaged over the slice's thickness, occupies more than half of at least
:data:`MIN_SLICE_LESION_MM2` (a finding so small that no slice shows it this way is a
positive series with no positive slice). The folder gets ``labels.csv`` (columns
:data:`LABEL_COLUMNS`: contrast ``low`` for 50-58 HU findings, ``standard`` above,
``none`` for negatives; size group from :func:`training.indication.head_ct_size_group`;
mimic, for every patient, one of :data:`MIMICS` or ``none``; acquisition, the
slice-thickness group) and
``slice_labels.csv`` (``sop_instance_uid,label``), and ``slice_masks.npz``: for every
slice the lesion of a positive series touches, a :data:`MASK_SIDE` square map of the share of each cell the
lesion fills, averaged over the slice's thickness (uint8, 255 = all lesion), keyed by SOP
Instance UID: the format :mod:`training.data.folder` reads. Everything is a function of
``(seed, patient index)``.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
from scipy import ndimage

from appliance.pixels import resize
from training import indication
from training.data import dicom_common as dc

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MIN_SLICE_LESION_MM2 = 10.0
#: Cells per side of a slice's lesion map (``slice_masks.npz``).
MASK_SIDE = 32


@dataclass(frozen=True)
class ScannerStyle:
    """How one (fictional) scanner model renders and stores a slice.

    ``noise_hu`` is the pixel noise of a :data:`REFERENCE_THICKNESS_MM` slice; blur and
    noise correlation lengths are in millimetres, so they hold at any pixel spacing.
    """

    manufacturer: str
    model: str
    kernel: str
    noise_hu: float
    psf_sigma_mm: float
    noise_corr_mm: float
    sharpen: float
    slope: float
    intercept: float


CT_STYLES: tuple[ScannerStyle, ...] = (
    ScannerStyle("Acme Medical", "HeadScan 16", "H30s", 4.0, 0.9, 1.1, 0.0, 1.0, -1024.0),
    ScannerStyle("Borealis Systems", "Aurora 64", "SHARP", 6.5, 0.55, 0.45, 0.6, 1.0, 0.0),
    ScannerStyle("Cobalt Imaging", "CX 128", "STANDARD", 5.0, 0.7, 0.7, 0.2, 0.5, -1024.0),
    ScannerStyle("Delta Tomography", "DT Vista", "B40f", 5.5, 0.8, 0.9, 0.35, 1.0, -8192.0),
)
#: Slice thickness at which a style's ``noise_hu`` holds; thinner slices are noisier.
REFERENCE_THICKNESS_MM = 5.0
#: Matrices of at least this size are rendered at half resolution and interpolated up
#: before the scanner's blur and noise (a quarter of the cost; finer than the blur).
HALF_RESOLUTION_FROM = 256
#: Sub-planes per millimetre of slice thickness over which the lesion is averaged.
PARTIAL_VOLUME_PLANES_PER_MM = 1.5
#: The scanner style the demo builds hold out of training entirely (external validation).
CT_EXTERNAL_STYLE = "Delta Tomography DT Vista"
#: Patient ``i`` is scanned on ``CT_STYLES[STYLE_CYCLE[i % 10]]``: the held-out style gets
#: one patient in ten, enough for external validation without starving the other splits.
STYLE_CYCLE = (0, 1, 2, 3, 0, 1, 2, 0, 1, 2)


@dataclass(frozen=True)
class CTConfig:
    """Size of a synthetic head-CT dataset."""

    n_patients: int
    seed: int
    matrix: int = 512
    fov_mm: tuple[float, float] = (205.0, 256.0)
    coverage_mm: tuple[float, float] = (110.0, 140.0)
    thicknesses_mm: tuple[float, ...] = (0.625, 1.0, 1.25, 2.5, 3.0, 5.0)
    #: Share of patients per thickness (``None``: equal shares).
    thickness_weights: tuple[float, ...] | None = None
    positive_fraction: float = 0.5

    def __post_init__(self):
        if self.thickness_weights is not None and len(self.thickness_weights) != len(self.thicknesses_mm):
            raise ValueError(f"{len(self.thickness_weights)} thickness_weights for {len(self.thicknesses_mm)} thicknesses_mm")


@dataclass(frozen=True)
class SeriesTruth:
    """Ground truth of one generated series."""

    patient_id: str
    series_uid: str
    label: int
    indication: str
    size_group: str
    lesion_type: str
    scanner: str
    contrast: str
    mimic: str
    acquisition: str
    slice_thickness_mm: float
    iph_volume_ml: float
    sdh_thickness_mm: float
    lesion_hu: float
    slice_uids: tuple[str, ...]
    slice_labels: tuple[int, ...]
    slice_masks: dict[str, np.ndarray] = field(compare=False, repr=False)  # SOP Instance UID -> lesion map


#: The columns of ``labels.csv``, after ``series_instance_uid`` and ``label``.
LABEL_COLUMNS = ("indication", "size_group", "lesion_type", "contrast", "mimic", "acquisition", "slice_thickness_mm",
                 "iph_volume_ml", "sdh_thickness_mm", "lesion_hu", "scanner")


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
        w.writerow(["series_instance_uid", "label", *LABEL_COLUMNS])
        for t in truths:
            w.writerow([t.series_uid, t.label, *(_column(getattr(t, c)) for c in LABEL_COLUMNS)])
    with open(out_dir / "slice_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sop_instance_uid", "label"])
        for t in truths:
            w.writerows(zip(t.slice_uids, t.slice_labels))
    np.savez_compressed(out_dir / "slice_masks.npz", **{uid: m for t in truths for uid, m in t.slice_masks.items()})
    return truths


def _column(value: object) -> str:
    """A ``labels.csv`` cell: floats to 0.001 (mm, mL, HU), the rest as they are."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


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
MIMICS = {"calcification": 0.2, "dense_sinus": 0.1, "streak": 0.1, "motion": 0.1}


def _sample_mimic(rng: np.random.Generator) -> dict | None:
    """A mimic of haemorrhage drawn for any patient, positive or not (truth is unaffected).

    ``calcification``: pineal, choroid plexus and falx calcifications, 150-700 HU;
    ``dense_sinus``: a hyperdense superior sagittal / transverse sinus, 60-75 HU, at the
    blood's own density; ``streak``: beam-hardening streaks across the posterior fossa;
    ``motion``: the head moved during the scan, leaving a faint shifted copy (ghost) of the
    skull over the brain.
    """
    u, edge = rng.random(), 0.0
    for name, share in MIMICS.items():
        edge += share
        if u < edge:
            return {"type": name, "hu": rng.uniform(150, 700) if name == "calcification" else rng.uniform(60, 75),
                    "angle": rng.uniform(-0.4, 0.4), "falx_z": rng.uniform(25, 45),
                    "ghost_mm": rng.uniform(2.0, 5.0), "ghost_weight": rng.uniform(0.08, 0.2)}
    return None


def _add_mimic(hu: np.ndarray, mimic: dict, x: np.ndarray, y: np.ndarray, z: float, ai: float, bi: float,
               brain: np.ndarray, spacing: float) -> None:
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
    elif mimic["type"] == "motion":
        shift = mimic["ghost_mm"] / spacing
        dx, dy = int(round(shift * np.cos(mimic["angle"] * 8))), int(round(shift * np.sin(mimic["angle"] * 8)))
        ghost = np.roll(hu, (dy, dx), axis=(0, 1))
        hu[brain] = ((1 - mimic["ghost_weight"]) * hu + mimic["ghost_weight"] * ghost)[brain]
    elif mimic["type"] == "streak" and z < -10:
        along = np.cos(mimic["angle"]) * y - np.sin(mimic["angle"]) * x
        hu[brain] += (40.0 * np.sin(along / 1.5) * np.exp(-np.abs(np.sin(mimic["angle"]) * y + np.cos(mimic["angle"]) * x) / 12))[brain]


@dataclass(frozen=True)
class _Grid:
    """One patient's in-plane coordinates (mm, head frame) and brain texture fields."""

    x: np.ndarray
    y: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    textures: tuple[np.ndarray, np.ndarray]
    spacing: float


def _grid(head: _Head, n: int, spacing: float, rng: np.random.Generator) -> _Grid:
    ax = ((np.arange(n) - (n - 1) / 2) * spacing).astype(np.float32)
    X, Y = np.meshgrid(ax, ax)
    X, Y = X - head.shift[0], Y - head.shift[1]
    ca, sa = np.cos(head.angle), np.sin(head.angle)
    textures = tuple(ndimage.zoom(rng.normal(0, 1, (8, 8)), n / 8, order=3)[:n, :n].astype(np.float32) for _ in range(2))
    x, y = ca * X + sa * Y, -sa * X + ca * Y
    return _Grid(x=x, y=y, x2=x * x, y2=y * y, textures=textures, spacing=spacing)


def _render(head: _Head, lesion: dict | None, z: float, thickness: float, grid: _Grid,
            mimic: dict | None = None) -> tuple[np.ndarray, float, np.ndarray | None]:
    """HU image (before scanner effects) of the slab centred at ``z``; the lesion area
    (mm^2) the slice shows, where the slab-averaged occupancy exceeds one half; and that
    slab-averaged occupancy (``None`` where the lesion does not reach the slab).

    The lesion is averaged over the slab's thickness (partial volume), so the tip of a
    lesion in a thick slice is faint and does not count as shown; the anatomy is taken at
    the slab's centre.
    """
    x, y = grid.x, grid.y
    n = x.shape[0]
    f = np.sqrt(max(0.0, 1 - (z / head.c) ** 2))
    hu = np.full((n, n), -1000.0, np.float32)
    if f < 0.2:
        return hu, 0.0, None

    def inside(a: float, b: float) -> np.ndarray:
        return grid.x2 * (1 / max(a, 1e-3) ** 2) + grid.y2 * (1 / max(b, 1e-3) ** 2) <= 1.0

    ao, bo = head.a * f, head.b * f
    ai, bi = ao - head.skull, bo - head.skull
    hu[inside(ao + 4, bo + 4)] = 30.0
    hu[inside(ao, bo)] = 1600.0
    hu[inside(ao - head.skull * 0.3, bo - head.skull * 0.3) & ~inside(ai + head.skull * 0.3, bi + head.skull * 0.3)] = 750.0
    brain_and_csf = inside(ai, bi)
    hu[brain_and_csf] = 7.0
    brain = inside(ai - head.csf, bi - head.csf)
    phase = z / 20.0
    texture = np.cos(phase) * grid.textures[0] + np.sin(phase) * grid.textures[1]
    hu[brain] = (head.brain_hu + 3.0 * texture)[brain]
    if -15 < z < 30:
        g = np.sqrt(max(0.0, 1 - ((z - 7) / 23) ** 2))
        for sx in (-1, 1):
            hu[(((x - sx * 9) / (5 * g + 1e-3)) ** 2 + ((y + 4) / (18 * g + 1e-3)) ** 2 <= 1) & brain] = 6.0
    if z > 20:
        hu[(np.abs(x) < 1.0) & (y > 0.25 * bi) & brain] = head.falx_hu
    if mimic is not None and mimic["type"] != "motion":
        _add_mimic(hu, mimic, x, y, z, ai, bi, brain, grid.spacing)
    shown = 0.0
    w = None
    if lesion is not None and _lesion_reaches(lesion, z, thickness):
        planes = max(1, int(np.ceil(thickness * PARTIAL_VOLUME_PLANES_PER_MM)))
        w = np.zeros_like(hu)
        zs = [z - thickness / 2 + (k + 0.5) * thickness / planes for k in range(planes)]
        for wk in _lesion_weights(lesion, x, y, zs, ai, bi):
            w += wk * brain_and_csf / planes
        shown = float((w > 0.5).sum()) * grid.spacing ** 2
        hu = hu * (1 - w) + lesion["hu"] * w
    if mimic is not None and mimic["type"] == "motion":
        _add_mimic(hu, mimic, x, y, z, ai, bi, brain, grid.spacing)
    return hu, shown, w


def lesion_map(occupancy: np.ndarray, side: int = MASK_SIDE) -> np.ndarray:
    """A slice's lesion occupancy (its render grid) as the share of each of ``side`` x
    ``side`` cells, resized as the model's inputs are, uint8 with 255 = all lesion (pure)."""
    return np.round(np.clip(resize(occupancy, side), 0.0, 1.0) * 255).astype(np.uint8)


def _lesion_reaches(les: dict, z: float, thickness: float) -> bool:
    """Whether the lesion can touch the slab centred at ``z`` (a cheap bound)."""
    half = les["rz"] if les["type"] == "intraparenchymal" else les["hz"]
    return abs(z - les["zc"]) <= half + thickness / 2


def _lesion_weights(les: dict, x: np.ndarray, y: np.ndarray, zs: list[float], ai: float,
                    bi: float) -> list[np.ndarray]:
    """Soft lesion occupancy in [0, 1] (edge about 1 mm wide) in each plane ``zs``."""
    if les["type"] == "intraparenchymal":
        r2 = ((x - les["xc"]) / les["rx"]) ** 2 + ((y - les["yc"]) / les["ry"]) ** 2
        scale = min(les["rx"], les["ry"])
        return [np.clip((1 - np.sqrt(r2 + ((z - les["zc"]) / les["rz"]) ** 2)) * scale, 0, 1) for z in zs]
    rho = np.sqrt(x ** 2 + y ** 2) + 1e-6
    rn = np.sqrt((x / ai) ** 2 + (y / bi) ** 2) + 1e-6
    depth = rho / rn - rho
    ang = (np.arctan2(y, x) - les["phi"] + np.pi) % (2 * np.pi) - np.pi
    prof = np.where(np.abs(ang) < les["half_width"], np.cos(np.pi / 2 * ang / les["half_width"]), 0.0)
    zps = [np.sqrt(max(0.0, 1 - ((z - les["zc"]) / les["hz"]) ** 2)) for z in zs]
    return [np.clip(les["tmax"] * prof * zp - depth, 0, 1) for zp in zps]


def _noise_field(n: int, style: ScannerStyle, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with the style's correlation length, twice the slice in each
    direction: each slice takes its own randomly placed window of it (drawing and
    filtering fresh noise for every slice would double the cost of a series)."""
    noise = ndimage.gaussian_filter(rng.standard_normal((2 * n, 2 * n), dtype=np.float32), style.noise_corr_mm / spacing)
    return noise / (noise.std() + 1e-9)


def _scanner(hu: np.ndarray, style: ScannerStyle, spacing: float, thickness: float, noise_field: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Apply resolution, kernel and noise of the scanner; return stored int16 values."""
    img = ndimage.gaussian_filter(hu, style.psf_sigma_mm / spacing)
    if style.sharpen:
        img = img + style.sharpen * (img - ndimage.gaussian_filter(img, 1.35 / spacing))
    n = hu.shape[0]
    r, c = rng.integers(0, n, size=2)
    noise = noise_field[r:r + n, c:c + n]
    if rng.random() < 0.5:
        noise = noise.T
    sigma = style.noise_hu * np.sqrt(REFERENCE_THICKNESS_MM / thickness)
    img = img + noise * sigma
    img = np.clip(img, -1024, 3071)
    return np.round((img - style.intercept) / style.slope).astype(np.int16)


def _generate_patient(cfg: CTConfig, index: int, out_dir: Path) -> SeriesTruth:
    rng = np.random.default_rng([cfg.seed, 1, index])
    style = CT_STYLES[STYLE_CYCLE[index % len(STYLE_CYCLE)]]
    patient = dc.synthetic_patient(rng, "CTSYN", index)
    when = dc.study_datetime(rng)
    study_uid, series_uid, frame_uid = (dc.uid(cfg.seed, "ct", index, k) for k in ("study", "series", "frame"))
    head = _sample_head(rng)
    weights = None if cfg.thickness_weights is None else np.asarray(cfg.thickness_weights) / sum(cfg.thickness_weights)
    thickness = float(rng.choice(cfg.thicknesses_mm, p=weights))
    n_slices = max(3, int(round(rng.uniform(*cfg.coverage_mm) / thickness)))
    slice_z = -0.72 * head.c + thickness * np.arange(n_slices)
    spacing = rng.uniform(*cfg.fov_mm) / cfg.matrix
    positive = rng.random() < cfg.positive_fraction
    lesion = _sample_lesion(rng, head, slice_z) if positive else None
    mimic = _sample_mimic(rng)
    coarse = 2 if cfg.matrix >= HALF_RESOLUTION_FROM else 1
    grid = _grid(head, cfg.matrix // coarse, spacing * coarse, rng)
    noise_field = _noise_field(cfg.matrix, style, spacing, rng)
    uids, labels, masks = [], [], {}
    for i, z in enumerate(slice_z):
        hu, shown, occupancy = _render(head, lesion, float(z), thickness, grid, mimic)
        if coarse > 1:
            hu = ndimage.zoom(hu, cfg.matrix / hu.shape[0], order=1, grid_mode=True, mode="nearest")
        stored = _scanner(hu, style, spacing, thickness, noise_field, rng)
        sop_uid = dc.uid(cfg.seed, "ct", index, "sop", i)
        ds = dc.new_dataset(CT_IMAGE_STORAGE, sop_uid)
        dc.add_patient_study(ds, patient, study_uid, when, f"SYNCT{index:07d}")
        _ct_modules(ds, style, series_uid, frame_uid, i, float(z), thickness, spacing, cfg.matrix)
        dc.set_pixels(ds, stored, signed=True, bits_stored=16)
        dc.write(ds, out_dir / patient["PatientID"] / "CT" / f"IM{i + 1:04d}.dcm")
        uids.append(sop_uid)
        labels.append(int(shown >= max(MIN_SLICE_LESION_MM2, spacing ** 2)))
        if occupancy is not None and occupancy.max() > 0:
            masks[sop_uid] = lesion_map(occupancy)
    kind = lesion["type"] if lesion else "none"
    iph_ml = indication.ellipsoid_volume_ml(lesion["rx"], lesion["ry"], lesion["rz"]) if kind == "intraparenchymal" else 0.0
    sdh_mm = float(lesion["tmax"]) if kind == "subdural" else 0.0
    hu = float(lesion["hu"]) if lesion else 0.0
    return SeriesTruth(
        patient_id=patient["PatientID"], series_uid=series_uid, label=int(lesion is not None),
        indication=indication.head_ct_indication(kind, iph_ml, sdh_mm, hu).value,
        size_group=indication.head_ct_size_group(kind, iph_ml, sdh_mm), lesion_type=kind,
        contrast=("low" if hu < 58 else "standard") if lesion else "none",
        mimic=mimic["type"] if mimic else "none", acquisition=indication.slice_thickness_group(thickness),
        slice_thickness_mm=thickness, iph_volume_ml=iph_ml, sdh_thickness_mm=sdh_mm, lesion_hu=hu,
        scanner=f"{style.manufacturer} {style.model}", slice_uids=tuple(uids), slice_labels=tuple(labels),
        slice_masks=masks,
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

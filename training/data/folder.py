"""Load a labelled folder of DICOM files into model-ready arrays.

The folder holds DICOM files (any layout, any depth) and ``labels.csv`` whose first
column is ``series_instance_uid`` or ``study_instance_uid`` and which has a ``label``
column (0/1). Further columns (e.g. ``size_bucket``) become per-series attributes used
to stratify metrics. An optional ``slice_labels.csv`` (``sop_instance_uid,label``) gives
per-image labels; without it every image takes its series label (weak labels). An optional
``slice_masks.npz`` (arrays keyed by SOP Instance UID, each a square uint8 map of the
lesion's share of each cell, 255 = all lesion) lets training supervise the model's
activation map too.

Pixels go through the appliance's own decode, slice order and preprocessing
(``appliance.triage.pipeline.decode_in_order``, ``model_input`` and ``slab_and_context``,
per the package's :class:`~appliance.models.manifest.InputSpec`), so a series gives the
trainer the tensor it gives the box: slices ordered along the slice normal, rescaled per
instance, every frame of a multi-frame instance, averaged over the package's slab. Each
image is kept once; its neighbours join it as channels only when a batch is built
(:meth:`Series.model_inputs`, :class:`Images`), so context costs no memory. Each
series' drift histograms are computed with
``appliance.drift.histograms``. Splitting is by patient (:func:`split_by_patient`),
never by image.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.errors import InvalidDicomError

from appliance.drift import histograms
from appliance.models.manifest import InputSpec
from appliance.pixels import to_hu
from appliance.triage import preprocess
from appliance.triage.decode import Slice, read_header
from appliance.triage.pipeline import decode_in_order, model_input, over_slab, slab_and_context

if TYPE_CHECKING:
    from training.data.input_cache import CachedSeries


@dataclass
class Series:
    """One labelled series, its images as model inputs and its drift histograms."""

    patient_id: str
    study_uid: str
    series_uid: str
    scanner: str
    label: int
    attributes: dict[str, str]
    sop_uids: list[str]  # one per image: a multi-frame instance's UID repeats per frame
    image_labels: np.ndarray
    inputs: np.ndarray  # (N, C, S, S): one per image, before context is stacked
    context: np.ndarray  # (N, 2k + 1): which images give each one its context
    masks: np.ndarray | None  # (N, 1, M, M) lesion share per cell, over the slab like the inputs
    drift: dict = field(repr=False)

    def model_inputs(self) -> np.ndarray:
        """The tensor the model eats for this series, as the box builds it."""
        return preprocess.with_context(self.inputs, self.context)


class Images:
    """Every image of some series as one set that batches draw from, each with its context.

    Images are stored once (``slices``, in the dtype they come in: float16 from the
    input cache, float32 from a loaded folder); :meth:`take` stacks the requested ones'
    context as the box does (``preprocess.with_context``) and returns float32.
    ``series_sizes`` and ``series_labels`` say which images make up which series, for
    series scores.
    """

    def __init__(self, series: list[Series]):
        self._build(np.concatenate([s.inputs for s in series]), [s.context for s in series],
                    [s.image_labels for s in series], [s.masks for s in series], [s.label for s in series])

    @classmethod
    def from_cached(cls, cached: list["CachedSeries"]) -> "Images":
        """Images from the input cache, read one series at a time into an array allocated
        once: the loaded series and their concatenation would hold every image twice (a
        648-series head-CT train split is 13 GB of float16)."""
        first = cached[0].load()["inputs"]
        slices = np.empty((sum(c.images for c in cached), *first.shape[1:]), dtype=first.dtype)
        contexts, image_labels, masks, at = [], [], [], 0
        for c in cached:
            arrays = c.load()
            n = len(arrays["inputs"])
            slices[at:at + n] = arrays["inputs"]
            contexts.append(arrays["context"])
            image_labels.append(arrays["image_labels"])
            masks.append(arrays.get("masks"))
            at += n
        images = cls.__new__(cls)
        images._build(slices, contexts, image_labels, masks, [c.label for c in cached])
        return images

    def _build(self, slices: np.ndarray, contexts: list[np.ndarray], image_labels: list[np.ndarray],
               masks: list[np.ndarray | None], labels: list[int]) -> None:
        self.slices = slices
        offsets = np.cumsum([0] + [len(c) for c in contexts[:-1]])
        self.context = np.concatenate([c + offset for c, offset in zip(contexts, offsets)])
        self.labels = np.concatenate(image_labels).astype(np.int64)
        self.masks = np.concatenate(masks) if all(m is not None for m in masks) else None
        self.series_sizes = np.array([len(c) for c in contexts])
        self.series_labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.slices.shape[1] * self.context.shape[1]

    def take(self, index: np.ndarray) -> np.ndarray:
        """Model inputs of the images at ``index``, ``(len(index), channels, S, S)`` float32."""
        return preprocess.with_context(self.slices, self.context[np.asarray(index)]).astype(np.float32, copy=False)

    def take_masks(self, index: np.ndarray) -> np.ndarray:
        """Lesion maps of the images at ``index`` as float32."""
        assert self.masks is not None
        return self.masks[np.asarray(index)].astype(np.float32, copy=False)


def read_labels(path: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """Read ``labels.csv``: (key column name, {uid: row}). Checks header and label values."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        key = (reader.fieldnames or [""])[0]
        if key not in ("series_instance_uid", "study_instance_uid") or "label" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: header must start with series_instance_uid or study_instance_uid and have label")
        rows = {}
        for n, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{path}:{n}: label must be 0 or 1, got {row['label']!r}")
            rows[row[key]] = row
    return key, rows


@dataclass(frozen=True)
class SeriesJob:
    """One labelled series found in a folder, ready to load (picklable, for worker processes)."""

    series_uid: str
    patient_id: str
    scanner: str
    paths: list[Path]
    row: dict[str, str]
    key: str
    spec: InputSpec
    slice_labels: dict[str, int]
    masks: dict[str, np.ndarray]
    mask_side: int | None
    thickness_mm: float

    def load(self) -> "Series":
        """Decode and preprocess the series as the box does."""
        return _load_series(self.paths, self.row, self.key, self.spec, self.slice_labels, self.masks, self.mask_side)


def series_jobs(root: Path, spec: InputSpec) -> list[SeriesJob]:
    """Every labelled series under ``root`` (unlabelled series are ignored), in series UID order."""
    root = Path(root)
    key, labels = read_labels(root / "labels.csv")
    slice_labels: dict[str, int] = {}
    if (root / "slice_labels.csv").exists():
        with open(root / "slice_labels.csv", newline="") as f:
            slice_labels = {r["sop_instance_uid"]: int(r["label"]) for r in csv.DictReader(f)}
    mask_file = np.load(root / "slice_masks.npz") if (root / "slice_masks.npz").exists() else None
    mapped = set(mask_file.files) if mask_file is not None else set()
    groups: dict[str, list[Path]] = {}
    study_of: dict[str, str] = {}
    thickness: dict[str, float] = {}
    who: dict[str, tuple[str, str]] = {}
    known: dict[str, dict[str, int]] = {}
    masks: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".csv", ".npz", ".txt")
                       and p.name != "CONTENT_SHA256"):
        try:
            ds = read_header(path)
        except InvalidDicomError:
            continue
        uid = ds.SeriesInstanceUID if key == "series_instance_uid" else ds.StudyInstanceUID
        if uid in labels:
            series_uid = str(ds.SeriesInstanceUID)
            groups.setdefault(series_uid, []).append(path)
            study_of[series_uid] = str(ds.StudyInstanceUID)
            thickness.setdefault(series_uid, float(ds.get("SliceThickness", 0) or 0))
            who.setdefault(series_uid, (str(ds.get("PatientID", "")), scanner_of(ds)))
            if ds.SOPInstanceUID in slice_labels:
                known.setdefault(series_uid, {})[ds.SOPInstanceUID] = slice_labels[ds.SOPInstanceUID]
            if ds.SOPInstanceUID in mapped:
                masks.setdefault(series_uid, {})[ds.SOPInstanceUID] = mask_file[ds.SOPInstanceUID]
    side = mask_file[mask_file.files[0]].shape[0] if mapped else None
    return [SeriesJob(u, *who[u], groups[u], labels[u if key == "series_instance_uid" else study_of[u]], key, spec,
                      known.get(u, {}), masks.get(u, {}), side, thickness[u]) for u in sorted(groups)]


def scanner_of(header) -> str:
    """``Manufacturer ManufacturerModelName`` of a series, the scanner style splits and
    subgroups go by; ``unknown`` when neither is there."""
    return f"{header.get('Manufacturer', '')} {header.get('ManufacturerModelName', '')}".strip() or "unknown"


def load_folder(root: Path, spec: InputSpec, workers: int | None = None) -> list[Series]:
    """Read every labelled series under ``root`` (unlabelled series are ignored), in
    ``workers`` processes (default: one per CPU; the result does not depend on it)."""
    jobs = series_jobs(root, spec)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 2:
        series = [job.load() for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as ex:
            series = list(ex.map(SeriesJob.load, jobs, chunksize=4))
    if not series:
        raise ValueError(f"{root}: no DICOM series matching labels.csv")
    return series


def _load_series(paths: list[Path], row: dict[str, str], key: str, spec: InputSpec,
                 slice_labels: dict[str, int], masks: dict[str, np.ndarray], mask_side: int | None) -> Series:
    pairs = [pair for _, _, pair in decode_in_order(paths, lambda image: (image, model_input(spec, image)))]
    slices = [image for image, _ in pairs]
    first = slices[0].dataset
    label = int(row["label"])
    sops = [str(image.dataset.SOPInstanceUID) for image in slices]
    positions = [image.position for image in slices]
    inputs, context = slab_and_context(spec, [model for _, model in pairs], positions, first)
    return Series(
        patient_id=str(first.PatientID), study_uid=str(first.StudyInstanceUID), series_uid=str(first.SeriesInstanceUID),
        scanner=scanner_of(first),
        label=label, attributes={k: v for k, v in row.items() if k not in (key, "label")},
        sop_uids=sops, image_labels=np.array([slice_labels.get(s, label) for s in sops], dtype=np.int64),
        inputs=inputs, context=context, masks=_lesion_maps(spec, masks, mask_side, sops, positions, first),
        drift=_drift(spec, slices),
    )


def _lesion_maps(spec: InputSpec, masks: dict[str, np.ndarray], side: int | None, sops: list[str],
                 positions: list[float], header) -> np.ndarray | None:
    """The series' lesion maps in slice order, ``(N, 1, side, side)`` in [0, 1] (zeros
    where ``slice_masks.npz`` has none), over the package's slab as its inputs are;
    ``None`` for a folder without maps."""
    if side is None:
        return None
    maps = np.zeros((len(sops), 1, side, side), np.float32)
    for i, sop in enumerate(sops):
        if sop in masks:
            maps[i, 0] = masks[sop] / 255.0
    return over_slab(spec, maps, np.asarray(positions, dtype=np.float64), header)


def _drift(spec: InputSpec, images: list[Slice]) -> dict:
    """The series' drift histograms, from the same decoded images as its inputs."""
    first = images[0].dataset
    if spec.kind == "ct_slice":
        hu = np.stack([to_hu(s.pixels, s.slope, s.intercept) for s in images])
        thickness = float(first.get("SliceThickness", 0) or 0)
        return histograms.ct_series_histograms(hu, thickness, float(first.PixelSpacing[0]))
    spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing") or [0.0]
    return histograms.radiograph_histograms(preprocess.normalize_radiograph(images[0].pixels, images[0].photometric),
                                            float(spacing[0]))


#: The splits a build uses, in the order patients are dealt out: train fits the weights,
#: val drives early stopping, calibration fits the calibration and the threshold, gate
#: decides which quantised variants ship, test is read once for the card.
SPLITS = ("train", "val", "calibration", "gate", "test")


def split_by_patient(series: list[Series], seed: int, fractions: tuple[float, ...],
                     names: tuple[str, ...] | None = None, external_scanner: str | None = None) -> dict[str, list[Series]]:
    """Deterministic split of whole patients (no patient in two splits).

    ``fractions`` are of the patients left after the external scanner's; the last split
    takes the remainder. ``names`` default to ``train, val, test`` for three fractions and
    :data:`SPLITS` for five. With ``external_scanner`` every series of that scanner style
    (and every other series of its patients) goes to ``external``, never to the others.
    """
    names = names or (("train", "val", "test") if len(fractions) == 3 else SPLITS)
    if len(names) != len(fractions):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} splits {names}")
    external = {s.patient_id for s in series if external_scanner is not None and s.scanner == external_scanner}
    patients = sorted({s.patient_id for s in series} - external)
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.round(np.cumsum(fractions) * len(patients)).astype(int)
    part = {p: "external" for p in external}
    for rank, idx in enumerate(order):
        part[patients[idx]] = names[min(int(np.searchsorted(bounds, rank, side="right")), len(names) - 1)]
    out = {name: [s for s in series if part[s.patient_id] == name] for name in names}
    if external_scanner is not None:
        out["external"] = [s for s in series if part[s.patient_id] == "external"]
    return out

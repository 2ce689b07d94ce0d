"""A dataset's training inputs, computed once per input spec and kept beside it.

Decoding and preprocessing hundreds of head-CT series takes minutes, and a build trains on
the same series every time, so :func:`cache_inputs` runs each training series through the
loader of :mod:`training.data.folder` (the appliance's own decode and preprocessing) once
and keeps its inputs as float16, with its image labels, lesion maps, context, drift
histograms and label row, in ``<dataset>/inputs-<key>/<series uid>.npz``. Only the
series a build trains on (and watches) are cached, thinned to one image per ``thin_mm``
of a thin-sliced series (neighbouring 5 mm slabs of a 0.625 mm series are nearly the same
image). The key hashes the input spec, the thinning and the source of the modules that
compute inputs, so a change to any of them makes a new cache. float16 keeps the inputs
(values in [0, 1]) to within 0.0005, a hundredth of a HU in the narrowest window; training
reads them, evaluation never does: every figure a card reports is computed from the DICOM
files through the box's float32 path.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from appliance import pixels
from appliance.models.manifest import InputSpec
from appliance.triage import decode, pipeline, preprocess
from training.data import folder
from training.data.folder import SeriesJob


def cache_key(spec: InputSpec, thin_mm: float | None) -> str:
    """Hash of the input spec, the thinning and the code that turns pixels into inputs (pure)."""
    sources = "".join(inspect.getsource(m) for m in (pixels, preprocess, pipeline, decode, folder))
    return hashlib.sha256(spec.model_dump_json().encode() + repr(thin_mm).encode() + sources.encode()).hexdigest()[:12]


def cache_dir(dataset: Path, spec: InputSpec, thin_mm: float | None = None) -> Path:
    return Path(dataset) / f"inputs-{cache_key(spec, thin_mm)}"


def thinned(images: int, thickness_mm: float, thin_mm: float | None) -> np.ndarray:
    """Which of a series' images training keeps: every k-th of a series sliced thinner than
    ``thin_mm`` (k = thin_mm / thickness, rounded), all of the others (pure)."""
    step = max(1, int(round(thin_mm / thickness_mm))) if thin_mm and 0 < thickness_mm < thin_mm else 1
    return np.arange(0, images, step)


@dataclass
class CachedSeries:
    """One series of the cache: what it is, and where its arrays are."""

    path: Path
    patient_id: str
    series_uid: str
    scanner: str
    label: int
    attributes: dict[str, str]
    images: int
    drift: dict = field(repr=False)

    def load(self) -> dict[str, np.ndarray]:
        """``inputs`` (float16), ``image_labels``, ``context`` and ``masks`` when the dataset has them."""
        with np.load(self.path) as z:
            return {k: z[k] for k in z.files if k != "meta"}


def cache_inputs(jobs: list[SeriesJob], out: Path, thin_mm: float | None = None, workers: int | None = None,
                 log: Callable[[str], None] = print) -> list[CachedSeries]:
    """The cached training inputs of ``jobs`` in ``out`` (:func:`cache_dir`), caching those
    that are not there yet, in ``workers`` processes (default: one per CPU)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [job for job in jobs if not (out / f"{job.series_uid}.npz").exists()]
    if missing:
        log(f"caching the training inputs of {len(missing)} series in {out}")
        workers = workers or os.cpu_count() or 1
        with ProcessPoolExecutor(workers) as pool:
            for done, _ in enumerate(pool.map(_cache_one, missing, [out] * len(missing), [thin_mm] * len(missing),
                                              chunksize=2), start=1):
                if done % 100 == 0:
                    log(f"  {done} of {len(missing)} series cached")
    return [_read(out / f"{job.series_uid}.npz") for job in jobs]


def _cache_one(job: SeriesJob, out: Path, thin_mm: float | None) -> None:
    s = job.load()
    keep = thinned(len(s.inputs), job.thickness_mm, thin_mm) if s.context.shape[1] == 1 else np.arange(len(s.inputs))
    meta = {"patient_id": s.patient_id, "series_uid": s.series_uid, "scanner": s.scanner, "label": s.label,
            "attributes": s.attributes, "drift": s.drift}
    arrays = {"inputs": s.inputs[keep].astype(np.float16), "image_labels": s.image_labels[keep].astype(np.int8),
              "context": (np.arange(len(keep))[:, None] if len(keep) < len(s.inputs) else s.context).astype(np.int32),
              "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    if s.masks is not None:
        arrays["masks"] = s.masks[keep].astype(np.float16)
    partial = out / f"{s.series_uid}.partial.npz"
    np.savez(partial, **arrays)
    os.replace(partial, out / f"{s.series_uid}.npz")


def _read(path: Path) -> CachedSeries:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        images = int(z["image_labels"].shape[0])
    return CachedSeries(path=path, patient_id=meta["patient_id"], series_uid=meta["series_uid"], scanner=meta["scanner"],
                        label=int(meta["label"]), attributes=meta["attributes"], images=images, drift=meta["drift"])

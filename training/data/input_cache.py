"""A dataset's model inputs, computed once per input spec and kept beside it for training.

Decoding and preprocessing 700 head-CT series takes minutes, and a build trains on the
same series every time, so :func:`cache_inputs` runs each series through the loader of
:mod:`training.data.folder` (the appliance's own decode and preprocessing) once and keeps
its inputs as float16, with its image labels, lesion maps, context, drift histograms and
label row, in ``<dataset>/inputs-<key>/<series uid>.npz``. The key hashes the input spec
and the source of the modules that compute inputs, so a change to either makes a new
cache. float16 keeps the inputs (values in [0, 1]) to within 0.0005, a hundredth of a HU in
the narrowest window; training reads them, evaluation never does: every figure a card
reports is computed from the DICOM files through the box's float32 path.

:func:`read_cached` lists a cache's series; :meth:`CachedSeries.load` reads one, thinned to
one image per ``thin_mm`` of a thin-sliced series when asked (neighbouring 5 mm slabs of a
0.625 mm series are nearly the same image).
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


def cache_key(spec: InputSpec) -> str:
    """Hash of the input spec and of the code that turns pixels into inputs (pure)."""
    sources = "".join(inspect.getsource(m) for m in (pixels, preprocess, pipeline, decode, folder))
    return hashlib.sha256(spec.model_dump_json().encode() + sources.encode()).hexdigest()[:12]


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
    thickness_mm: float
    #: The series' DICOM files, as absolute paths.
    files: list[Path] = field(repr=False)
    drift: dict = field(repr=False)

    def load(self, thin_mm: float | None = None) -> dict[str, np.ndarray]:
        """``inputs`` (float16), ``image_labels``, ``masks`` (or absent), ``context``;
        with ``thin_mm`` and no context, every k-th image of a series whose slices are
        thinner than ``thin_mm`` (k = thin_mm / thickness, rounded)."""
        with np.load(self.path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        step = 1
        if thin_mm and self.thickness_mm < thin_mm and arrays["context"].shape[1] == 1:
            step = max(1, int(round(thin_mm / self.thickness_mm)))
        if step > 1:
            keep = np.arange(0, self.images, step)
            arrays = {k: v[keep] for k, v in arrays.items()}
            arrays["context"] = np.arange(len(keep))[:, None]
        return arrays


def cache_dir(dataset: Path, spec: InputSpec) -> Path:
    return Path(dataset) / f"inputs-{cache_key(spec)}"


def cache_inputs(dataset: Path, spec: InputSpec, workers: int | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Fill the input cache of ``dataset`` for ``spec`` (series already cached are kept);
    return its folder. One process per CPU by default."""
    out = cache_dir(dataset, spec)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [job for job in folder.series_jobs(Path(dataset), spec) if not (out / f"{job.series_uid}.npz").exists()]
    if not jobs:
        return out
    log(f"caching the inputs of {len(jobs)} series in {out}")
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(_cache_one, jobs, [out] * len(jobs), chunksize=2), start=1):
            if done % 100 == 0:
                log(f"  {done} of {len(jobs)} series cached")
    return out


def _cache_one(job: "folder.SeriesJob", out: Path) -> None:
    s = job.load()
    meta = {"patient_id": s.patient_id, "series_uid": s.series_uid, "scanner": s.scanner, "label": s.label,
            "attributes": s.attributes, "drift": s.drift, "thickness_mm": job.thickness_mm,
            "files": [p.relative_to(out.parent).as_posix() for p in job.paths]}
    arrays = {"inputs": s.inputs.astype(np.float16), "image_labels": s.image_labels.astype(np.int8),
              "context": s.context.astype(np.int32), "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    if s.masks is not None:
        arrays["masks"] = s.masks.astype(np.float16)
    partial = out / f"{s.series_uid}.partial.npz"
    np.savez(partial, **arrays)
    os.replace(partial, out / f"{s.series_uid}.npz")


def read_cached(folder_path: Path) -> list[CachedSeries]:
    """Every series of an input cache, in series UID order."""
    series = []
    for path in sorted(Path(folder_path).glob("*.npz")):
        if path.name.endswith(".partial.npz"):
            continue
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            images = int(z["image_labels"].shape[0])
        series.append(CachedSeries(path=path, patient_id=meta["patient_id"], series_uid=meta["series_uid"],
                                   scanner=meta["scanner"], label=int(meta["label"]), attributes=meta["attributes"],
                                   images=images, thickness_mm=float(meta["thickness_mm"]),
                                   files=[Path(folder_path).parent / f for f in meta["files"]], drift=meta["drift"]))
    return series

"""One series through one model: decode, preprocess (:func:`prepare`: the series'
:class:`~appliance.outcome.decision.SeriesInputs`), batch and infer (:func:`infer`),
aggregate and threshold (:func:`decide`: a :class:`~appliance.outcome.decision.Verdict`);
:func:`run` chains the last two.

Slices are decoded and turned into model inputs one instance at a time, so memory holds
model inputs, not decoded series; :func:`stack_inputs` then applies the package's slab
and context (:func:`slab_and_context`). The trainer (``training.data.folder``) builds its
inputs with :func:`decode_in_order`, :func:`model_input` and :func:`slab_and_context`
too, so the box and the trainer see the same tensor for the same series. The key slice
(highest score) is decoded again for the heat map. NaN or Inf outputs, a decode failure
or the deadline passing raise :class:`InferenceError`; there is no path to a silent
negative.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydicom.dataset import Dataset

from appliance.drift import features as drift_features
from appliance.drift.histograms import PIXEL_STRIDE
from appliance.errors import DecodeError, InferenceError, InferenceTimeout
from appliance.models.backends import Runtime
from appliance.models.manifest import InputSpec, Manifest
from appliance.outcome.decision import SeriesInputs, Verdict
from appliance.pixels import to_hu
from appliance.triage import preprocess
from appliance.triage.decode import Slice, decode_instance

T = TypeVar("T")


def model_input(spec: InputSpec, image: Slice) -> np.ndarray:
    """One decoded image as the model's input, per the package's input spec (pure)."""
    if spec.kind == "ct_slice":
        return preprocess.ct_slice_input(image.pixels, image.slope, image.intercept, spec.window_tuples(), spec.size)
    return preprocess.radiograph_input(image.pixels, image.photometric, spec.size)


def slab_and_context(
    spec: InputSpec, inputs: list[np.ndarray], positions: list[float], header: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """A series' per-image model inputs in slice order, averaged over the package's slab
    (:func:`over_slab`), and which slices give each one its context
    (``preprocess.context_index``, one step = the slab, else the slice thickness) (pure).

    Returns
    -------
    slices : ndarray
        ``(N, C, S, S)`` float32, one per image.
    context : ndarray
        ``(N, 2k + 1)`` indices into ``slices``; ``preprocess.with_context`` stacks them.
    """
    z = np.asarray(positions, dtype=np.float64)
    stacked = over_slab(spec, np.stack(inputs).astype(np.float32, copy=False), z, header)
    if len(stacked) < 2 or not spec.context_slices:
        return stacked, np.arange(len(stacked))[:, None].repeat(spec.slices_per_input, axis=1)
    step = max(slice_thickness(header, z), spec.slab_mm or 0.0)
    return stacked, preprocess.context_index(z, step, spec.context_slices)


def over_slab(spec: InputSpec, stacked: np.ndarray, positions: np.ndarray, header: Dataset) -> np.ndarray:
    """``(N, ...)`` per-slice arrays in slice order averaged over the package's slab
    (``preprocess.slab_average``); as they are without a slab or with one slice (pure)."""
    if spec.slab_mm is None or len(stacked) < 2:
        return stacked
    return preprocess.slab_average(stacked, positions, slice_thickness(header, positions), spec.slab_mm)


def slice_thickness(header: Dataset, positions: np.ndarray) -> float:
    """A series' slice thickness in mm: SliceThickness, else the median spacing of its
    slices (``positions`` in slice order, at least two), else 1 (pure)."""
    return abs(float(header.get("SliceThickness", 0) or 0)) or float(np.median(np.diff(positions))) or 1.0


def stack_inputs(spec: InputSpec, inputs: list[np.ndarray], positions: list[float], header: Dataset) -> np.ndarray:
    """The model's input tensor for a series, ``(N, channels, S, S)`` float32: its images
    through :func:`slab_and_context` and ``preprocess.with_context`` (pure)."""
    return preprocess.with_context(*slab_and_context(spec, inputs, positions, header))


def drift_counts(manifest: Manifest, image: Slice) -> np.ndarray:
    """One image's intensity histogram in the drift reference's bins, computed the way the
    package's reference was (HU, or the normalised radiograph; subsampled) (pure)."""
    kind = manifest.input.kind
    if kind == "ct_slice":
        values = to_hu(image.pixels[::PIXEL_STRIDE, ::PIXEL_STRIDE], image.slope, image.intercept)
    else:
        values = preprocess.normalize_radiograph(image.pixels, image.photometric, pixel_stride=PIXEL_STRIDE)
    return drift_features.intensity_counts(kind, values)


def heat_map(cam: np.ndarray) -> np.ndarray:
    """A class-activation map (logit units) as a heat map in [0, 1]: its sigmoid (pure)."""
    return (1.0 / (1.0 + np.exp(-np.clip(cam.astype(np.float64), -60, 60)))).astype(np.float32)


def decode_in_order(paths: list[Path], convert: Callable[[Slice], T]) -> list[tuple[Path, int, T]]:
    """Decode every instance, ``convert`` each frame, and order the results along the slice normal.

    ``convert`` runs as soon as an instance is decoded, so only what it returns is kept.
    Each decoded frame keeps its own rescale and photometric interpretation; the sort
    is stable (ties keep path order, then frame order). A :class:`DecodeError`
    propagates.

    Returns
    -------
    list of (Path, frame, converted)
        In slice order.
    """

    def one(path: Path) -> list[tuple[float, Path, int, T]]:
        return [(image.position, path, number, convert(image)) for number, image in enumerate(decode_instance(path))]

    # Decoding and NumPy release the GIL often enough for threads to use both cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        entries = [entry for entries in pool.map(one, paths) for entry in entries]
    entries.sort(key=lambda entry: entry[0])
    return [(path, number, converted) for _, path, number, converted in entries]


def prepare(manifest: Manifest, paths: list[Path]) -> SeriesInputs:
    """Decode and preprocess a series in slice order: the model inputs, where each came
    from, their hash and the series' drift features from the same decoded pixels (no
    second read)."""

    def convert(image: Slice) -> tuple[np.ndarray, np.ndarray, Dataset, float]:
        return model_input(manifest.input, image), drift_counts(manifest, image), image.dataset, image.position

    try:
        entries = decode_in_order(paths, convert)
    except DecodeError as exc:
        raise InferenceError(f"decode failed: {exc}") from exc
    if not entries:
        raise InferenceError("series has no images")
    inputs = stack_inputs(
        manifest.input,
        [converted[0] for _, _, converted in entries],
        [converted[3] for _, _, converted in entries],
        entries[0][2][2],
    )
    digest = hashlib.sha256(np.ascontiguousarray(inputs).data.cast("B")).hexdigest()  # no copy
    features = drift_features.series_features(
        manifest.input.kind, entries[0][2][2], [converted[1] for _, _, converted in entries], len(entries)
    )
    return SeriesInputs(inputs, [(path, number) for path, number, _ in entries], digest, features)


def golden_series_inputs(manifest: Manifest, model_dir: Path) -> list[np.ndarray]:
    """The package's golden DICOM series through this pipeline's decode and preprocessing
    (:func:`prepare`), one ``(N, C, S, S)`` array per ``manifest.golden_series`` entry, for
    ``appliance.models.qualify`` to score end to end."""
    return [prepare(manifest, [Path(model_dir) / f for f in case.files]).inputs for case in manifest.golden_series]


def infer(runtime: Runtime, inputs: np.ndarray, batch: int, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over ``inputs`` in batches, checking the deadline and the outputs."""
    scores, cams = [], []
    for start in range(0, len(inputs), batch):
        if time.monotonic() > deadline:
            raise InferenceTimeout(f"timed out after {start} of {len(inputs)} images")
        score, cam = runtime.run(inputs[start : start + batch])
        scores.append(np.asarray(score, np.float64).reshape(-1))
        cams.append(np.asarray(cam, np.float32))
    score, cam = np.concatenate(scores), np.concatenate(cams)
    if not (np.isfinite(score).all() and np.isfinite(cam).all()):
        raise InferenceError("model output contains NaN or Inf")
    if score.shape[0] != len(inputs):
        raise InferenceError(f"model returned {score.shape[0]} scores for {len(inputs)} images")
    return score, cam


def decide(
    manifest: Manifest, scores: np.ndarray, cams: np.ndarray, origins: list[tuple[Path, int]], input_sha256: str
) -> Verdict:
    """Aggregate per-image scores into the series score, calibrate it when the package
    carries a calibration (:meth:`Manifest.series_score`) and threshold it at the
    package's operating point; the highest-scoring image is the key slice (pure)."""
    series_score = manifest.series_score(scores)
    key = int(np.argmax(scores))
    threshold = manifest.operating_point.threshold
    return Verdict(
        series_score,
        series_score >= threshold,
        threshold,
        origins[key][0],
        origins[key][1],
        cams[key],
        scores,
        input_sha256,
    )


def run(runtime: Runtime, manifest: Manifest, series: SeriesInputs, batch: int, deadline: float) -> Verdict:
    """Infer over a series' inputs (see :func:`prepare`) and decide."""
    scores, cams = infer(runtime, series.inputs, batch, deadline)
    return decide(manifest, scores, cams, series.origins, series.input_sha256)

"""One series through one model: decode, preprocess (:func:`prepare`), batch and infer
(:func:`infer`), aggregate and threshold (:func:`decide`); :func:`run` chains the last two.

Slices are decoded and turned into model inputs one instance at a time, so memory holds
model inputs, not decoded series. The key slice (highest score) is decoded again for the
heat map. NaN or Inf outputs, a decode failure or the deadline passing raise
:class:`InferenceError`; there is no path to a silent negative.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.triage.decode import Slice, decode_instance
from appliance.errors import DecodeError, InferenceError
from appliance.triage import preprocess
from appliance.models.backends import Runtime
from appliance.models.package import Manifest


def model_input(manifest: Manifest, image: Slice) -> np.ndarray:
    """One decoded image as the model's input, per the manifest (pure)."""
    spec = manifest.input
    if spec.kind == "ct_slice":
        return preprocess.ct_slice_input(image.pixels, image.slope, image.intercept,
                                         spec.window_tuples(), spec.size)
    return preprocess.radiograph_input(image.pixels, image.photometric, spec.size)


def heat_map(cam: np.ndarray) -> np.ndarray:
    """A class-activation map (logit units) as a heat map in [0, 1]: its sigmoid (pure)."""
    return (1.0 / (1.0 + np.exp(-np.clip(cam.astype(np.float64), -60, 60)))).astype(np.float32)


@dataclass(frozen=True)
class SeriesResult:
    """The model's verdict on one series."""

    score: float
    flag: bool
    threshold: float
    key_path: Path
    key_frame: int
    key_cam: np.ndarray
    image_scores: np.ndarray
    input_sha256: str


def prepare(manifest: Manifest, paths: list[Path]) -> tuple[np.ndarray, list[tuple[Path, int]], str]:
    """Decode and preprocess a series in slice order.

    Returns
    -------
    inputs : ndarray
        ``(N, C, S, S)`` float32.
    origins : list of (Path, frame)
        Where each input came from.
    input_sha256 : str
        Hash of the model inputs, for the audit trail.
    """
    def one(path: Path) -> list[tuple[float, np.ndarray, Path, int]]:
        try:
            frames = decode_instance(path)
        except DecodeError as exc:
            raise InferenceError(f"decode failed: {exc}") from exc
        return [(image.position, model_input(manifest, image), path, number)
                for number, image in enumerate(frames)]

    # Decoding and NumPy release the GIL often enough for threads to use both cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        entries = [entry for entries in pool.map(one, paths) for entry in entries]
    if not entries:
        raise InferenceError("series has no images")
    entries.sort(key=lambda entry: entry[0])
    inputs = np.stack([entry[1] for entry in entries]).astype(np.float32)
    digest = hashlib.sha256(inputs.tobytes()).hexdigest()
    return inputs, [(entry[2], entry[3]) for entry in entries], digest


def infer(runtime: Runtime, inputs: np.ndarray, batch: int, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over ``inputs`` in batches, checking the deadline and the outputs."""
    scores, cams = [], []
    for start in range(0, len(inputs), batch):
        if time.monotonic() > deadline:
            raise InferenceError(f"timed out after {start} of {len(inputs)} images")
        score, cam = runtime.run(inputs[start:start + batch])
        scores.append(np.asarray(score, np.float64).reshape(-1))
        cams.append(np.asarray(cam, np.float32))
    score, cam = np.concatenate(scores), np.concatenate(cams)
    if not (np.isfinite(score).all() and np.isfinite(cam).all()):
        raise InferenceError("model output contains NaN or Inf")
    if score.shape[0] != len(inputs):
        raise InferenceError(f"model returned {score.shape[0]} scores for {len(inputs)} images")
    return score, cam


def decide(manifest: Manifest, scores: np.ndarray, cams: np.ndarray, origins: list[tuple[Path, int]],
           input_sha256: str) -> SeriesResult:
    """Aggregate per-image scores into the series score and threshold it at the package's
    operating point; the highest-scoring image is the key slice (pure)."""
    series_score = min(max(manifest.aggregation.apply(scores), 0.0), 1.0)
    key = int(np.argmax(scores))
    threshold = manifest.operating_point.threshold
    return SeriesResult(series_score, series_score >= threshold, threshold, origins[key][0], origins[key][1],
                        cams[key], scores, input_sha256)


def run(runtime: Runtime, manifest: Manifest, prepared: tuple[np.ndarray, list[tuple[Path, int]], str],
        batch: int, deadline: float) -> SeriesResult:
    """Infer over prepared inputs (see :func:`prepare`) and decide."""
    inputs, origins, digest = prepared
    scores, cams = infer(runtime, inputs, batch, deadline)
    return decide(manifest, scores, cams, origins, digest)

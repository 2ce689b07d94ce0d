"""One series through one model: decode, preprocess (:func:`prepare`: the series'
:class:`~appliance.outcome.decision.SeriesInputs`), batch and infer (:func:`infer`),
aggregate and threshold (:func:`decide`: a :class:`~appliance.outcome.decision.Verdict`);
:func:`run` chains the last two.

Slices are decoded and turned into model inputs one instance at a time, so memory holds
model inputs, not decoded series; :func:`stack_inputs` then applies the package's slab
and context (:func:`slab_and_context`). The trainer (``training.data.folder``) builds its
inputs with :func:`decode_in_order`, :func:`model_input` and :func:`slab_and_context`
too, so the box and the trainer see the same tensor for the same series.

The per-instance part (:func:`prepare_instance`: decode, model input, drift counts) is
all that depends on one instance alone; :func:`assemble` does the rest (slice order,
slab, context, hash, drift features) once the series is complete. The worker prepares
instances as they arrive (``appliance.triage.prepared``) and hands them to
:func:`prepare` as ``ready``: the series' inputs are the same bytes either way. The key
slice (highest score) is decoded again for the heat map. NaN or Inf outputs, a decode failure
or the deadline passing raise :class:`InferenceError`; there is no path to a silent
negative.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


#: Images of at least this many pixels keep their decoded pixels for the key image: they
#: come one or a few to a series and cost hundreds of milliseconds to decode again (a
#: 2826x2355 JPEG-LS chest radiograph 0.27 s). A 512x512 CT slice decodes again in 2 ms,
#: and keeping 200 of them would add half again to the series' prepared inputs.
KEEP_DECODED_PIXELS = 1_000_000


@dataclass(frozen=True)
class PreparedImage:
    """One decoded frame as a model sees it: the per-image part of :func:`prepare`."""

    position: float  # along the slice normal (see ``decode.Slice``)
    input: np.ndarray  # :func:`model_input`, (C, S, S) float32
    counts: np.ndarray  # :func:`drift_counts`
    header: Dataset  # the instance's header (pixel data dropped)
    digest: bytes  # SHA-256 of ``input``'s bytes (:func:`input_sha256` chains them)
    decoded: Slice | None = None  # the decoded image itself, when it is large (KEEP_DECODED_PIXELS)

    @property
    def nbytes(self) -> int:
        return self.input.nbytes + self.counts.nbytes + (self.decoded.pixels.nbytes if self.decoded else 0)


def input_key(spec: InputSpec) -> str:
    """What a :class:`PreparedImage` depends on in the package's input spec: two specs
    with the same key prepare every image alike (slab and context apply at assembly)."""
    return spec.model_dump_json(include={"kind", "windows", "size"})


def prepare_instance(manifest: Manifest, path: Path) -> list[PreparedImage]:
    """Decode one stored instance and convert each frame (pure but for the read; a
    :class:`DecodeError` propagates)."""
    prepared = []
    for image in decode_instance(path):
        converted = model_input(manifest.input, image)
        prepared.append(
            PreparedImage(
                image.position,
                converted,
                drift_counts(manifest, image),
                image.dataset,
                hashlib.sha256(np.ascontiguousarray(converted).data.cast("B")).digest(),  # no copy
                image if image.pixels.size >= KEEP_DECODED_PIXELS else None,
            )
        )
    return prepared


def kept_decoded(prepared: Mapping[Path, list[PreparedImage]]) -> dict[tuple[Path, int], Slice]:
    """The decoded images that preparation kept (large ones), by (file, frame)."""
    return {
        (path, frame): image.decoded
        for path, images in prepared.items()
        for frame, image in enumerate(images)
        if image.decoded is not None
    }


def prepare_instances(manifest: Manifest, paths: list[Path]) -> list[list[PreparedImage]]:
    """:func:`prepare_instance` for each path, on as many threads as there are cores
    (decoding and NumPy release the GIL often enough to use them)."""
    if len(paths) < 2:
        return [prepare_instance(manifest, path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda path: prepare_instance(manifest, path), paths))


def assemble(manifest: Manifest, prepared: list[tuple[Path, list[PreparedImage]]]) -> SeriesInputs:
    """A series' prepared instances (in arrival order) as its :class:`SeriesInputs`: the
    frames ordered along the slice normal (stable: ties keep arrival, then frame order),
    then slab and context, the hash and the drift features (pure)."""
    entries = [
        (image.position, path, number, image) for path, images in prepared for number, image in enumerate(images)
    ]
    if not entries:
        raise InferenceError("series has no images")
    entries.sort(key=lambda entry: entry[0])
    header = entries[0][3].header
    images = [image for *_, image in entries]
    positions = [image.position for image in images]
    inputs = stack_inputs(manifest.input, [image.input for image in images], positions, header)
    features = drift_features.series_features(
        manifest.input.kind, header, [image.counts for image in images], len(images)
    )
    return SeriesInputs(
        inputs, [(path, number) for _, path, number, _ in entries], input_sha256(images, header), features
    )


def input_sha256(images: list[PreparedImage], header: Dataset) -> str:
    """The audit trail's hash of what a model saw: SHA-256 over each image's input digest
    in slice order, then the slice positions and the slice thickness (float64). With the
    package, whose slab and context depend on nothing else, these fix the tensor the model
    read; hashing the images as they are prepared keeps 200 MB of hashing off the time
    after a series' last image (pure)."""
    positions = np.asarray([image.position for image in images], dtype=np.float64)
    chain = hashlib.sha256(b"".join(image.digest for image in images))
    chain.update(positions.tobytes())
    chain.update(np.float64(slice_thickness(header, positions) if len(images) > 1 else 0.0).tobytes())
    return chain.hexdigest()


def prepare(
    manifest: Manifest,
    paths: list[Path],
    ready: Mapping[Path, list[PreparedImage]] | None = None,
    keep: Callable[[Path, list[PreparedImage]], object] = lambda path, images: None,
) -> SeriesInputs:
    """Decode and preprocess a series (``paths`` in arrival order) in slice order: the
    model inputs, where each came from, their hash and the series' drift features from
    the same decoded pixels (no second read).

    Instances in ``ready`` (prepared as they arrived) are not decoded again, and the
    result is the same either way; ``keep(path, images)`` hears each instance this call
    prepared. A :class:`DecodeError` becomes an :class:`InferenceError`.
    """
    ready = ready or {}
    missing = [path for path in paths if path not in ready]
    try:
        done = dict(zip(missing, prepare_instances(manifest, missing), strict=True))
    except DecodeError as exc:
        raise InferenceError(f"decode failed: {exc}") from exc
    for path, images in done.items():
        keep(path, images)
    return assemble(manifest, [(path, ready[path] if path in ready else done[path]) for path in paths])


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

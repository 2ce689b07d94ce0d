"""Score series from their DICOM files exactly as the box does, with every variant at once.

Every figure a card reports comes from here: each series is decoded and preprocessed by
the appliance's own code (``appliance.triage.pipeline``: decode in slice order, model
input per image, slab and context) in float32, then every runner scores the same tensor
and the package's aggregation makes one series score per runner. The stability check
scores the same series again with two perturbations (:class:`Perturbation`): Gaussian
noise of 1 HU added to every pixel before the windows (for a radiograph, 1 stored grey
level), and a relative change of 1e-6 to every model input. Noise is seeded per
instance from its SOP Instance UID, so a series gets the same noise whichever order its
files decode in.
"""

from __future__ import annotations

import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.models.manifest import Aggregation, InputSpec
from appliance.triage.decode import Slice
from appliance.triage.pipeline import decode_in_order, model_input, stack_inputs
from training.backends import Runner, run_batched

#: Stability perturbations: pixel noise (HU, or stored grey levels for a radiograph) and
#: relative input change.
NOISE_HU = 1.0
RELATIVE_CHANGE = 1e-6


@dataclass(frozen=True)
class Perturbation:
    """What the stability check changes: ``noise`` on the pixels before preprocessing, or a
    ``relative`` change of the model inputs."""

    name: str
    noise: float = 0.0
    relative: float = 0.0


STABILITY = (Perturbation("noise", noise=NOISE_HU), Perturbation("relative", relative=RELATIVE_CHANGE))


def _noisy(image: Slice, amount: float, seed: int) -> Slice:
    """``image`` with Gaussian noise of ``amount`` HU (CT: divided by the rescale slope) or
    stored grey levels added to its pixels, seeded by the instance's SOP Instance UID."""
    uid = str(image.dataset.get("SOPInstanceUID", ""))
    rng = np.random.default_rng([seed, zlib.crc32(uid.encode()), int(image.position * 1000) & 0xFFFFFFFF])
    noise = rng.standard_normal(image.pixels.shape, dtype=np.float32) * np.float32(amount / (image.slope or 1.0))
    return replace(image, pixels=image.pixels.astype(np.float32) + noise)


def series_tensors(spec: InputSpec, paths: list[Path], noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's input tensor for a series as the box builds it, and with ``noise`` the
    same series with pixel noise added before preprocessing (one decode for both)."""

    def convert(image: Slice) -> tuple[np.ndarray, np.ndarray | None, float, object]:
        clean = model_input(spec, image)
        noisy = model_input(spec, _noisy(image, noise, seed)) if noise else None
        return clean, noisy, image.position, image.dataset

    entries = [c for _, _, c in decode_in_order(paths, convert)]
    positions, header = [e[2] for e in entries], entries[0][3]
    clean = stack_inputs(spec, [e[0] for e in entries], positions, header)
    noisy = stack_inputs(spec, [e[1] for e in entries], positions, header) if noise else None
    return clean, noisy


def relative_change(inputs: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    """``inputs * (1 + amount * N(0, 1))`` elementwise, seeded (pure)."""
    rng = np.random.default_rng(seed)
    return (inputs * (1.0 + amount * rng.standard_normal(inputs.shape, dtype=np.float32))).astype(np.float32)


@dataclass
class SeriesScores:
    """One series scored: its aggregated (uncalibrated) score per runner, and per
    perturbation per runner; the index of its highest-scoring image under the first runner."""

    scores: dict[str, float]
    perturbed: dict[str, dict[str, float]]
    key_image: int


def score_series(spec: InputSpec, aggregation: Aggregation, paths: list[Path], runners: dict[str, Runner],
                 perturbations: tuple[Perturbation, ...] = (), seed: int = 0) -> SeriesScores:
    """Score one series with every runner (and again under each perturbation)."""
    noise = next((p.noise for p in perturbations if p.noise), 0.0)
    return _score(aggregation, series_tensors(spec, paths, noise, seed), runners, perturbations, seed)


def _score(aggregation: Aggregation, tensors: tuple[np.ndarray, np.ndarray | None], runners: dict[str, Runner],
           perturbations: tuple[Perturbation, ...], seed: int) -> SeriesScores:
    clean, noisy = tensors
    scores, key_image = {}, 0
    for n, (name, runner) in enumerate(runners.items()):
        image_scores = run_batched(runner, clean)[0]
        scores[name] = float(aggregation.apply(image_scores))
        if n == 0:
            key_image = int(np.argmax(image_scores))
    perturbed: dict[str, dict[str, float]] = {}
    for p in perturbations:
        inputs = noisy if p.noise else relative_change(clean, p.relative, seed)
        perturbed[p.name] = {name: float(aggregation.apply(run_batched(runner, inputs)[0]))
                             for name, runner in runners.items()}
    return SeriesScores(scores, perturbed, key_image)


#: Series decoded ahead of the one being scored: a radiograph is one file, decoded on one
#: core, so the next ones decode while the models run.
PREFETCH = 2


def score_all(spec: InputSpec, aggregation: Aggregation, series_paths: list[list[Path]], runners: dict[str, Runner],
              perturbations: tuple[Perturbation, ...] = (), seed: int = 0,
              progress: Callable[[int, int], None] = lambda done, total: None) -> list[SeriesScores]:
    """:func:`score_series` over many series, in order, decoding up to :data:`PREFETCH`
    series ahead in threads (decoding and NumPy release the GIL)."""
    noise = next((p.noise for p in perturbations if p.noise), 0.0)
    out: list[SeriesScores] = []
    with ThreadPoolExecutor(max_workers=PREFETCH) as pool:
        pending = deque(pool.submit(series_tensors, spec, paths, noise, seed) for paths in series_paths[:PREFETCH])
        for done, _ in enumerate(series_paths, start=1):
            tensors = pending.popleft().result()
            if done - 1 + PREFETCH < len(series_paths):
                pending.append(pool.submit(series_tensors, spec, series_paths[done - 1 + PREFETCH], noise, seed))
            out.append(_score(aggregation, tensors, runners, perturbations, seed))
            progress(done, len(series_paths))
    return out

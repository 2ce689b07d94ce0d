"""Pick the backend a model runs on: golden test on every target, then the fastest.

On activation (and before shadowing) every variant of the package (backend x precision)
is loaded on every target of its backend that this box has, run on the package's golden
inputs and compared with the golden outputs within the variant's tolerance. Packages
with golden DICOM series (``manifest.golden_series``) are also checked end to end: the
caller decodes and preprocesses each series with the box's own pipeline (this stage may
not import it, so the inputs come in as arrays), every variant scores them, aggregation
and calibration give the series score, and score and flag must match. Those that pass
are timed; the fastest wins unless settings pin one. If none passes, the model is
refused and whatever was active stays.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from appliance.errors import PackageError
from appliance.models.backends import Runtime, Target, load
from appliance.models.manifest import Manifest, Variant

TIMING_ROUNDS = 5
#: Share of a CAM's cells that make its top region (where the heat map points).
CAM_TOP_FRACTION = 0.05


def top_region(cam: np.ndarray, fraction: float = CAM_TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` highest cells of one map (at least one; pure)."""
    flat = np.asarray(cam, np.float64).ravel()
    k = max(1, int(round(fraction * flat.size)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(cam))


def cam_top_overlap(expected: np.ndarray, actual: np.ndarray, fraction: float = CAM_TOP_FRACTION) -> float:
    """Smallest, over the batch, share of the expected top region that the actual top region
    covers: 1.0 when every map points at the same cells (pure)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    overlaps = [
        float((top_region(e, fraction) & top_region(a, fraction)).sum() / top_region(e, fraction).sum())
        for e, a in zip(expected, actual, strict=True)
    ]
    return min(overlaps) if overlaps else 1.0


@dataclass(frozen=True)
class Golden:
    """The package's golden inputs and the outputs they must give."""

    inputs: np.ndarray
    score: np.ndarray
    cam: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Golden:
        with np.load(path) as data:
            return cls(data["input"].astype(np.float32), data["score"], data["cam"])


@dataclass(frozen=True)
class Trial:
    """One variant on one target: did it match the golden outputs, and how fast was it."""

    backend: str
    device: str
    precision: str
    passed: bool
    score_diff: float | None = None
    cam_diff: float | None = None
    ms_per_image: float | None = None
    error: str | None = None
    #: Largest series-score difference on the golden DICOM series; None when the package
    #: has none or no decoder was given (``series_checked`` False).
    series_diff: float | None = None
    series_checked: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.device}/{self.precision}"

    def as_dict(self) -> dict:
        return asdict(self)


def golden_check(runtime: Runtime, variant: Variant, golden: Golden) -> tuple[bool, float, float]:
    """Run the golden inputs; return (within tolerance, max |score diff|, cam difference).

    The cam difference is ``1 - top-region overlap`` when the variant's tolerance sets
    ``cam_min_overlap`` (packages since issue 9), else the max absolute logit difference.
    """
    score, cam = runtime.run(golden.inputs)
    score = np.asarray(score, np.float64).reshape(golden.score.shape)
    cam = np.asarray(cam, np.float64).reshape(golden.cam.shape)
    if not (np.isfinite(score).all() and np.isfinite(cam).all()):
        return False, float("inf"), float("inf")
    score_diff = float(np.max(np.abs(score - golden.score)))
    tolerance = variant.tolerance
    if tolerance.cam_min_overlap is not None:
        overlap = cam_top_overlap(golden.cam, cam)
        return score_diff <= tolerance.score_atol and overlap >= tolerance.cam_min_overlap, score_diff, 1.0 - overlap
    cam_diff = float(np.max(np.abs(cam - golden.cam)))
    return score_diff <= tolerance.score_atol and cam_diff <= tolerance.cam_atol, score_diff, cam_diff


def golden_series_check(
    runtime: Runtime, manifest: Manifest, variant: Variant, series_inputs: list[np.ndarray]
) -> tuple[bool, float]:
    """Score each golden DICOM series' preprocessed inputs, aggregate and calibrate as
    :meth:`Manifest.series_score` does, and compare score (within ``series_atol``) and
    flag (exactly) with the manifest's golden verdicts. Returns (passed, max difference)."""
    tolerance = variant.tolerance.series_atol
    worst, passed = 0.0, tolerance is not None
    for case, inputs in zip(manifest.golden_series, series_inputs, strict=True):
        score, _ = runtime.run(inputs)
        series_score = manifest.series_score(np.asarray(score, np.float64).reshape(-1))
        if not np.isfinite(series_score):
            return False, float("inf")
        worst = max(worst, abs(series_score - case.score))
        flag = series_score >= manifest.operating_point.threshold
        passed = passed and flag == case.flag
    return passed and worst <= (tolerance or 0.0), worst


def time_per_image(runtime: Runtime, inputs: np.ndarray) -> float:
    """Best of a few rounds over the golden batch, in milliseconds per image."""
    runtime.run(inputs)  # warm-up
    best = float("inf")
    for _ in range(TIMING_ROUNDS):
        started = time.perf_counter()
        runtime.run(inputs)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(inputs)


def try_variants(
    manifest: Manifest,
    model_dir: Path,
    targets: list[Target],
    golden: Golden,
    series_inputs: list[np.ndarray] | None = None,
) -> list[tuple[Trial, Runtime | None]]:
    """Every (variant, target) pair this box can run, golden-tested and timed.

    ``series_inputs``: the package's golden DICOM series decoded and preprocessed by the
    box (one array per ``manifest.golden_series`` entry); when given, each variant must
    also pass :func:`golden_series_check`.
    """
    trials: list[tuple[Trial, Runtime | None]] = []
    outputs = (manifest.outputs.score, manifest.outputs.cam)
    for variant in manifest.variants:
        for target in (t for t in targets if t.backend == variant.backend):
            trial = partial(Trial, backend=target.backend, device=target.device, precision=variant.precision)
            try:
                runtime = load(
                    target, [model_dir / f for f in variant.files], variant.precision, variant.options, outputs
                )
                passed, score_diff, cam_diff = golden_check(runtime, variant, golden)
                series_diff = None
                if series_inputs is not None and manifest.golden_series:
                    series_passed, series_diff = golden_series_check(runtime, manifest, variant, series_inputs)
                    passed = passed and series_passed
            except Exception as exc:  # noqa: BLE001 - a variant that cannot load is a failed trial, not a crash
                trials.append((trial(passed=False, error=f"{type(exc).__name__}: {exc}"[:300]), None))
                continue
            speed = time_per_image(runtime, golden.inputs) if passed else None
            trials.append(
                (
                    trial(
                        passed=passed,
                        score_diff=score_diff,
                        cam_diff=cam_diff,
                        ms_per_image=speed,
                        series_diff=series_diff,
                        series_checked=series_diff is not None,
                    ),
                    runtime if passed else None,
                )
            )
    return trials


def choose(trials: list[tuple[Trial, Runtime | None]], pin: str | None = None) -> tuple[Trial, Runtime]:
    """The fastest passing trial, or the pinned one (``backend/device/precision``).

    Raises
    ------
    PackageError
        When no variant passes its golden test, or the pinned one did not.
    """
    passing = [(trial, runtime) for trial, runtime in trials if trial.passed and runtime is not None]
    if pin:
        for trial, runtime in passing:
            if trial.label == pin:
                return trial, runtime
        raise PackageError(
            f"pinned backend {pin!r} is not available or failed its golden test; "
            f"passing: {[t.label for t, _ in passing]}"
        )
    if not passing:
        reasons = (
            "; ".join(
                f"{t.label}: {t.error or f'score diff {t.score_diff:.3g}, cam diff {t.cam_diff:.3g}'}"
                + (f", golden series diff {t.series_diff:.3g}" if t.series_checked else "")
                for t, _ in trials
            )
            or "no variant runs on this box"
        )
        raise PackageError(f"no variant passed its golden test ({reasons})")
    return min(passing, key=lambda pair: pair[0].ms_per_image or float("inf"))

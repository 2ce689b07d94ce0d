"""How stable a package's flags are: the same series scored again under the perturbations
of :mod:`training.score`, and how many series sit close to the threshold.

A flag flips under a tiny perturbation only if the series' calibrated score lies within the
perturbation's effect of the threshold, so the two figures go together: the share of flags
that flipped, and how many series scored within 0.05, 0.1 and 0.25 logit of the
threshold. ``python -m training stability PACKAGE --data FOLDER`` prints both for any
signed package on any labelled folder (never a sealed set: those are read by builds only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from appliance.models.backends import Target, load
from appliance.models.package import extract_package
from training.data.folder import series_jobs
from training.evaluate import flip_share
from training.score import STABILITY, score_all

#: Distances from the threshold (logit units) at which the series near it are counted.
MARGINS = (0.05, 0.1, 0.25)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def near_threshold(scores: np.ndarray, threshold: float, margins=MARGINS) -> dict[str, int]:
    """How many calibrated ``scores`` lie within each margin (logit units) of ``threshold`` (pure)."""
    distance = np.abs(_logit(scores) - _logit(np.array(threshold)))
    return {f"{m:g}": int((distance <= m).sum()) for m in margins}


def stability_report(package: Path, trusted_keys: list[Path], folder: Path, first: int = 0,
                     limit: int | None = None) -> dict:
    """Score ``folder``'s series (in series UID order, ``first`` to ``first + limit``) with
    every variant of ``package`` on this CPU, plain and perturbed.

    Returns ``{"series", "threshold", "variants": {name: {"flags", "flips": {perturbation:
    proportion}, "near_threshold": {margin: count}}}}``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        manifest = extract_package(package, Path(tmp), trusted_keys)
        runners = {f"{v.backend}/{v.precision}": load(Target(v.backend, "CPU"), [Path(tmp) / f for f in v.files],
                                                      v.precision, v.options).run for v in manifest.variants}
        jobs = series_jobs(folder, manifest.input)[first:None if limit is None else first + limit]
        scored = score_all(manifest.input, manifest.aggregation, [j.paths for j in jobs], runners, STABILITY)
    threshold = manifest.operating_point.threshold
    out = {"series": len(jobs), "threshold": threshold, "variants": {}}
    for name in runners:
        scores = np.array([manifest.series_score(np.array([s.scores[name]])) for s in scored])
        flags = scores >= threshold
        flips = {p.name: flip_share(flags, np.array([manifest.series_score(np.array([s.perturbed[p.name][name]]))
                                                     for s in scored]) >= threshold) for p in STABILITY}
        out["variants"][name] = {"flags": int(flags.sum()), "flips": flips,
                                 "near_threshold": near_threshold(scores, threshold)}
    return out

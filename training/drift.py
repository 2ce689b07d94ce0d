"""Drift thresholds shipped in the package, computed from the training data at build time.

For each reference histogram the trainer draws sub-windows of ``window_series`` series
(with replacement) from the training series, computes the Jensen-Shannon distance of
each sub-window to the full reference, and ships the mean and standard deviation. The
box alerts above ``mean + z * std`` (``z`` = ``sigma`` with its multiple-testing
correction, see ``appliance.drift.monitor``); ``threshold`` = ``mean + sigma * std`` is
shipped as well for people reading the reference.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from appliance.drift.histograms import merge
from appliance.drift.statistics import js_distance

#: Series per sub-window: the box's default minimum per judged window.
WINDOW_SERIES = 150


def reference_thresholds(series: Sequence[Mapping[str, Mapping[str, list]]], window_series: int = WINDOW_SERIES,
                         windows: int = 200, sigma: float = 3.0, seed: int = 0) -> dict[str, dict]:
    """Threshold statistics per feature from per-series histogram sets.

    Parameters
    ----------
    series : sequence of histogram sets
        One ``{feature: {"edges", "counts"}}`` per training series (the ``drift`` of
        ``training.data.folder.Series``).
    window_series : int
        Series per sub-window (the box never judges a smaller window).
    windows : int
        Sub-windows drawn.
    sigma : float
        Multiplier for the shipped ``threshold``.
    seed : int
        Seeds the draws, so a package build is reproducible.
    """
    if not series:
        raise ValueError("reference_thresholds needs at least one series")
    reference = merge(list(series))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(series), size=(windows, window_series))
    out = {}
    for name, ref in reference.items():
        counts = np.array([s[name]["counts"] for s in series], dtype=np.int64)
        distances = np.array([js_distance(ref["counts"], counts[p].sum(axis=0)) for p in picks])
        mean, std = float(distances.mean()), float(distances.std(ddof=1))
        out[name] = {"statistic": "js_distance", "mean": mean, "std": std, "sigma": sigma,
                     "threshold": mean + sigma * std, "window_series": window_series, "windows": windows}
    return out

"""The package's drift thresholds: statistics of reference sub-windows, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.drift.histograms import merge
from appliance.drift.statistics import js_distance
from training.drift import reference_thresholds

EDGES = [0.0, 1.0, 2.0, 3.0, 4.0]


def _series(rng: np.random.Generator, n: int, p=(0.1, 0.4, 0.4, 0.1)) -> list[dict]:
    return [{"x": {"edges": EDGES, "counts": rng.multinomial(1, p).tolist()}} for _ in range(n)]


def test_thresholds_bound_fresh_windows_from_the_reference_and_not_shifted_ones():
    rng = np.random.default_rng(0)
    series = _series(rng, 500)
    t = reference_thresholds(series, window_series=150, windows=300, seed=1)["x"]
    assert t["statistic"] == "js_distance" and t["std"] > 0
    assert t["threshold"] == pytest.approx(t["mean"] + 3 * t["std"])
    ref = merge(series)["x"]["counts"]
    fresh = [js_distance(ref, np.sum([s["x"]["counts"] for s in _series(rng, 150)], axis=0)) for _ in range(100)]
    shifted = [js_distance(ref, np.sum([s["x"]["counts"] for s in _series(rng, 150, (0.3, 0.3, 0.2, 0.2))], axis=0))
               for _ in range(20)]
    assert np.mean(np.array(fresh) > t["threshold"]) <= 0.03
    assert min(shifted) > t["threshold"]
    assert abs(np.mean(fresh) - t["mean"]) < 2 * t["std"]


def test_thresholds_are_reproducible_and_need_series():
    series = _series(np.random.default_rng(2), 40)
    assert reference_thresholds(series, seed=3) == reference_thresholds(series, seed=3)
    with pytest.raises(ValueError, match="at least one series"):
        reference_thresholds([])

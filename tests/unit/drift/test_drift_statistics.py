"""The drift statistics against hand-computed values and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from appliance.drift.statistics import chi2_sf, chi_square, js_distance, ks_binned, psi, wasserstein_binned


def test_psi_by_hand():
    # proportions r = (0.5, 0.5), c = (0.25, 0.75):
    # (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5) = 0.25 (ln 2 + ln 1.5) = 0.25 ln 3
    assert psi([50, 50], [1, 3]) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)


def test_psi_floors_empty_bins():
    value = psi([1, 0], [1, 1])
    r, c = np.array([1.0, 1e-4]), np.array([0.5, 0.5])
    assert value == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert math.isfinite(value)


def test_js_distance_by_hand_and_scipy():
    # Disjoint supports: divergence 1 bit, distance 1.
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    # r = (1, 0), c = (0.5, 0.5): m = (0.75, 0.25); KL(r||m) = log2(4/3); KL(c||m) = 0.5 log2(2/3) + 0.5 log2(2)
    d = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert js_distance([2, 0], [1, 1]) == pytest.approx(math.sqrt(d), rel=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.integers(0, 50, 30), rng.integers(0, 50, 30)
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9, abs=1e-12)


def _samples(counts: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.repeat(centres, counts)


def test_ks_and_wasserstein_by_hand():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    # CDFs (0.5, 1, 1) and (0, 0.5, 1): KS 0.5; W = 0.5*1 + 0.5*1 = 1.0 (centres 1 apart)
    assert ks_binned([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)
    assert wasserstein_binned(edges, [1, 1, 0], [0, 1, 1]) == pytest.approx(1.0)
    assert wasserstein_binned(edges * 10, [1, 0, 0], [0, 0, 1]) == pytest.approx(20.0)


def test_ks_and_wasserstein_match_scipy_on_binned_samples():
    rng = np.random.default_rng(2)
    edges = np.array([-1000.0, -500, -100, 0, 40, 80, 200, 1000, 3000])
    centres = (edges[:-1] + edges[1:]) / 2
    for _ in range(20):
        p, q = rng.integers(0, 40, 8), rng.integers(0, 40, 8)
        p[0] += 1
        q[-1] += 1
        a, b = _samples(p, centres), _samples(q, centres)
        assert ks_binned(p, q) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
        assert wasserstein_binned(edges, p, q) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)


def test_chi_square_by_hand():
    # Table [[10, 20], [20, 10]]: expected 15 everywhere, stat = 4 * 25 / 15, dof 1.
    stat, dof, p = chi_square([10, 20], [20, 10])
    assert stat == pytest.approx(100 / 15)
    assert dof == 1
    assert p == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-10)  # chi2(1) sf
    assert chi_square([5, 0, 0], [7, 0, 0]) == (0.0, 0, 1.0)


def test_chi_square_matches_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        table = rng.integers(1, 60, (2, 6))
        stat, dof, p = chi_square(table[0], table[1])
        ref = stats.chi2_contingency(table, correction=False)
        assert stat == pytest.approx(ref.statistic, rel=1e-10)
        assert dof == ref.dof
        assert p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 20, 83])
def test_chi2_sf_matches_scipy(dof):
    for x in (0.01, 0.5, 1.0, dof * 0.7, dof, dof + 3.0, 2.5 * dof + 10, 200.0):
        assert chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="bins differ"):
        js_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="all be zero"):
        psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="edges"):
        wasserstein_binned([0, 1], [1, 1], [1, 1])

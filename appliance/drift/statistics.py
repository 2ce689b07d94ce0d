"""Distances and tests between two binned distributions (pure numpy, no I/O).

Every function takes counts (or proportions) over the same bins; they are normalised
here, so a reference with a million pixels and a window with a thousand compare fine.
"""

from __future__ import annotations

import math

import numpy as np

#: Floor on proportions in :func:`psi`, so an empty bin does not make it infinite.
PSI_FLOOR = 1e-4


def _proportions(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative numbers")
    total = c.sum()
    if total <= 0:
        raise ValueError("counts must not all be zero")
    return c / total


def _pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(p) != np.shape(q):
        raise ValueError(f"bins differ: {np.shape(p)} vs {np.shape(q)}")
    return _proportions(p), _proportions(q)


def psi(reference: np.ndarray, current: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` with proportions floored at ``floor``."""
    r, c = _pair(reference, current)
    r, c = np.maximum(r, floor), np.maximum(c, floor)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, log base 2, so in [0, 1])."""
    r, c = _pair(reference, current)
    m = (r + c) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max((kl(r) + kl(c)) / 2, 0.0))


def ks_binned(reference: np.ndarray, current: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic from the binned CDFs: the largest gap between them."""
    r, c = _pair(reference, current)
    return float(np.max(np.abs(np.cumsum(r) - np.cumsum(c))))


def wasserstein_binned(edges: np.ndarray, reference: np.ndarray, current: np.ndarray) -> float:
    """Earth mover's distance with each bin's mass at its centre (units of the edges).

    The integral of ``|F_r - F_c|`` between consecutive bin centres.
    """
    r, c = _pair(reference, current)
    e = np.asarray(edges, dtype=np.float64)
    if e.shape != (len(r) + 1,):
        raise ValueError(f"need {len(r) + 1} edges for {len(r)} bins, got {e.shape}")
    centres = (e[:-1] + e[1:]) / 2
    gaps = np.abs(np.cumsum(r) - np.cumsum(c))[:-1]
    return float(np.sum(gaps * np.diff(centres)))


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, int, float]:
    """Chi-square test of homogeneity between two count vectors (the 2 x k table).

    Categories empty in both are dropped. Returns ``(statistic, degrees of freedom,
    p-value)``; with fewer than two non-empty categories the test is ``(0.0, 0, 1.0)``.
    """
    table = np.vstack([np.asarray(reference, np.float64), np.asarray(current, np.float64)])
    if table.shape[0] != 2 or (table < 0).any():
        raise ValueError("chi_square needs two non-negative count vectors of equal length")
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or (rows == 0).any():
        return 0.0, 0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, dof, chi2_sf(stat, dof)


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution: ``Q(dof / 2, x / 2)``."""
    if dof <= 0:
        raise ValueError("dof must be positive")
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma function (series below a + 1, else continued fraction)."""
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # Lentz's continued fraction for Q(a, x).
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)

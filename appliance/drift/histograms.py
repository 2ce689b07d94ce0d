"""Fixed-bin histograms of image features, for reference (training) and live (box) use.

The trainer computes reference histograms over a model's training distribution with
these functions and ships them in the model package; the appliance computes the same
histograms over what it receives and compares. Bin edges are fixed per feature
(:data:`CT_EDGES`, :data:`RADIOGRAPH_EDGES`) so the two always line up. Values outside
the edges are counted in the first or last bin, so nothing is silently dropped.

A histogram set is a plain JSON-able dict::

    {"hu": {"edges": [...], "counts": [...]}, "slice_count": {...}, ...}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Bin edges of the CT features (HU, counts, millimetres).
CT_EDGES: dict[str, np.ndarray] = {
    "hu": np.arange(-1100.0, 3101.0, 50.0),
    "slice_count": np.array([0, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 640, 4000.0]),
    "slice_thickness_mm": np.array([0, 0.75, 1.25, 2.0, 3.0, 4.0, 5.5, 8.0, 12.0, 100.0]),
    "pixel_spacing_mm": np.arange(0.2, 1.61, 0.1),
    "matrix_size": np.array([0, 192, 288, 384, 448, 544, 800, 4096.0]),
}

#: Bin edges of the radiograph features (normalised intensity, millimetres, pixels).
RADIOGRAPH_EDGES: dict[str, np.ndarray] = {
    "intensity": np.linspace(0.0, 1.0, 51),
    "pixel_spacing_mm": np.arange(0.05, 2.01, 0.1),
    "matrix_size": np.array([0, 256, 384, 512, 1024, 2048, 3072, 4096, 8192.0]),
}

#: Keep one pixel in ``PIXEL_STRIDE`` along each axis for intensity histograms.
PIXEL_STRIDE = 4


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in bins ``edges``; out-of-range values go to the end bins."""
    v = np.clip(np.asarray(values, dtype=np.float64).ravel(), edges[0], edges[-1])
    counts, _ = np.histogram(v, bins=edges)
    return counts.astype(np.int64)


def ct_series_histograms(
    hu_slices: np.ndarray, slice_thickness_mm: float, pixel_spacing_mm: float
) -> dict[str, dict[str, list[float]]]:
    """Histograms of one CT series.

    Parameters
    ----------
    hu_slices : ndarray, shape (S, H, W)
        The series in Hounsfield units (see ``appliance.triage.preprocess.to_hu``).
    slice_thickness_mm, pixel_spacing_mm : float
        SliceThickness and the row pixel spacing.
    """
    values = {
        "hu": hu_slices[:, ::PIXEL_STRIDE, ::PIXEL_STRIDE],
        "slice_count": [hu_slices.shape[0]],
        "slice_thickness_mm": [slice_thickness_mm],
        "pixel_spacing_mm": [pixel_spacing_mm],
        "matrix_size": [max(hu_slices.shape[1:])],
    }
    return _pack(values, CT_EDGES)


def radiograph_histograms(normalized: np.ndarray, pixel_spacing_mm: float) -> dict[str, dict[str, list[float]]]:
    """Histograms of one radiograph normalised to [0, 1] (``normalize_radiograph``)."""
    values = {
        "intensity": normalized[::PIXEL_STRIDE, ::PIXEL_STRIDE],
        "pixel_spacing_mm": [pixel_spacing_mm],
        "matrix_size": [max(normalized.shape)],
    }
    return _pack(values, RADIOGRAPH_EDGES)


def merge(sets: list[Mapping[str, Mapping[str, list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """Sum histogram sets with identical features and edges (e.g. over a dataset)."""
    if not sets:
        raise ValueError("merge needs at least one histogram set")
    out: dict[str, dict[str, list[float]]] = {}
    for name, first in sets[0].items():
        total: np.ndarray = np.zeros(len(first["counts"]), dtype=np.int64)
        for s in sets:
            if list(s[name]["edges"]) != list(first["edges"]):
                raise ValueError(f"histogram {name!r}: bin edges differ, cannot merge")
            total += np.asarray(s[name]["counts"], dtype=np.int64)
        out[name] = {"edges": list(first["edges"]), "counts": total.tolist()}
    return out


def _pack(values: Mapping[str, object], edges: Mapping[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    return {
        name: {"edges": [float(e) for e in edges[name]], "counts": histogram(np.asarray(v), edges[name]).tolist()}
        for name, v in values.items()
    }

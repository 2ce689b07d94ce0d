"""Drift features of one triaged series, from what the worker already decoded (pure).

Intensities are binned with :mod:`appliance.drift.histograms`, the code that built the
package's reference, so live and reference histograms line up bin for bin. A series'
features are a JSON-able dict::

    {"kind": "ct_slice",
     "histograms": {"hu": [counts...], "slice_count": [...], "kvp": [...], ...},
     "categories": {"kernel": "FC23", "manufacturer_model": "ACME Scan 64", "body_part": "HEAD"}}

Edges are not stored: :func:`feature_edges` gives them per input kind. Categorical
values are normalised by :func:`normalise_label` to the report's controlled form; only
Manufacturer, ManufacturerModelName, ConvolutionKernel and BodyPartExamined are read,
never a serial number, a name or a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from appliance.drift import histograms

#: Score bins of the output histogram (one count per series).
SCORE_EDGES = np.linspace(0.0, 1.0, 21)

#: Bins of header features the package reference does not carry.
HEADER_EDGES: dict[str, np.ndarray] = {
    "kvp": np.array([0, 70, 90, 100, 110, 120, 130, 140, 150, 1000.0]),
    "rows": np.array([0, 256, 384, 512, 768, 1024, 2048, 3072, 4096, 65536.0]),
    "columns": np.array([0, 256, 384, 512, 768, 1024, 2048, 3072, 4096, 65536.0]),
}

#: The intensity feature of each input kind (a pixel histogram, not one count per series).
INTENSITY = {"ct_slice": "hu", "radiograph": "intensity"}

#: Categorical features read from the header, and the keywords they come from.
CATEGORY_KEYWORDS = {
    "kernel": ("ConvolutionKernel",),
    "manufacturer_model": ("Manufacturer", "ManufacturerModelName"),
    "body_part": ("BodyPartExamined",),
}

#: Every feature name the monitor can judge (and so alert on): the controlled vocabulary
#: of the alert names a box tells the hub at check-in.
FEATURE_NAMES: frozenset[str] = frozenset(
    {
        *histograms.CT_EDGES,
        *histograms.RADIOGRAPH_EDGES,
        "slice_count",
        *HEADER_EDGES,
        "score",
        *CATEGORY_KEYWORDS,
        "flag",
        "outcome",
    }
)

_NOT_LABEL = re.compile(r"[^A-Za-z0-9 _.+-]+")
UNKNOWN = "unknown"


def feature_edges(kind: str) -> dict[str, np.ndarray]:
    """Bin edges of every histogram feature of an input kind, output score included."""
    if kind == "ct_slice":
        base = dict(histograms.CT_EDGES)
    elif kind == "radiograph":
        base = dict(histograms.RADIOGRAPH_EDGES)
        base["slice_count"] = histograms.CT_EDGES["slice_count"]
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return {**base, **HEADER_EDGES, "score": SCORE_EDGES}


def normalise_label(value: Any) -> str:
    """A header value as a controlled label: ``[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}``.

    Multi-valued elements are joined with spaces, other characters become spaces, runs of
    spaces collapse; an empty result is ``"unknown"``.
    """
    if value is None:
        return UNKNOWN
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = " ".join(str(v) for v in value)
    text = " ".join(_NOT_LABEL.sub(" ", str(value)).split())
    text = text.lstrip(" _.+-")[:64].rstrip()
    return text or UNKNOWN


def intensity_counts(kind: str, values: np.ndarray) -> np.ndarray:
    """Counts of one image's subsampled intensities in the reference bins.

    Parameters
    ----------
    kind : {"ct_slice", "radiograph"}
        The model's input kind.
    values : ndarray
        HU (``ct_slice``) or the normalised radiograph, already subsampled by
        :data:`appliance.drift.histograms.PIXEL_STRIDE` along each axis.
    """
    return histograms.histogram(values, feature_edges(kind)[INTENSITY[kind]])


def series_features(
    kind: str, header: Mapping[str, Any] | Any, image_counts: Sequence[np.ndarray], images: int
) -> dict[str, Any]:
    """The input features of one series.

    Parameters
    ----------
    kind : {"ct_slice", "radiograph"}
        The model's input kind.
    header : pydicom Dataset or mapping
        A header of the series (keyword access with ``.get``).
    image_counts : sequence of ndarray
        :func:`intensity_counts` of the images used (radiographs: the first only, as the
        reference does).
    images : int
        Images in the series.
    """
    edges = feature_edges(kind)
    rows, columns = _number(header, "Rows"), _number(header, "Columns")
    spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing") or [0.0]
    scalars = {
        "slice_count": images,
        "pixel_spacing_mm": float(spacing[0]),
        "matrix_size": max(rows, columns),
        "kvp": _number(header, "KVP"),
        "rows": rows,
        "columns": columns,
    }
    if kind == "ct_slice":
        scalars["slice_thickness_mm"] = _number(header, "SliceThickness")
    used = list(image_counts) if kind == "ct_slice" else list(image_counts)[:1]
    hists = {INTENSITY[kind]: np.sum(used, axis=0).astype(np.int64).tolist()}
    hists.update({name: histograms.histogram(np.array([v]), edges[name]).tolist() for name, v in scalars.items()})
    categories = {
        name: normalise_label(" ".join(str(header.get(k) or "") for k in keys).strip() or None)
        for name, keys in CATEGORY_KEYWORDS.items()
        if name != "kernel" or kind == "ct_slice"
    }
    return {"kind": kind, "histograms": hists, "categories": categories}


def _number(header: Any, keyword: str) -> float:
    try:
        value = header.get(keyword)
        if value is None or value == "":
            return 0.0
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError):
        return 0.0

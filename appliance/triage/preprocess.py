"""Model inputs: pure functions shared by the trainer and the appliance.

Every model input is built here, so training (``training.data``) and the box's worker
can never disagree. The arithmetic is :mod:`appliance.pixels`; this module chains it.

CT slices: stored values -> Hounsfield units (``to_hu``) -> one channel per window
(``multi_window``, each in [0, 1]) -> square (``pad_to_square``) -> model size
(``resize``). :func:`ct_slice_input` chains them. A package with a slab then averages each
slice's input with its neighbours over that thickness (:func:`slab_average`), so thin
slices reach the model as one thick slice would; one with context gives the model each
slice's neighbours as further channels (:func:`context_index`, :func:`with_context`).

Radiographs: stored values -> [0, 1] by robust percentiles, MONOCHROME1 inverted
(:func:`normalize_radiograph`) -> square -> model size. :func:`radiograph_input`
chains them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.pixels import ROW_BLOCK, banded_rows, bands, multi_window, pad_to_square, resize, to_hu

#: The three CT windows of the head model, as (name, centre HU, width HU).
HEAD_CT_WINDOWS: tuple[tuple, ...] = (
    ("brain", 40.0, 80.0),
    ("subdural", 80.0, 200.0),
    ("bone", 600.0, 2800.0),
)
#: A fourth head-CT window: 20-80 HU with everything denser than 200 HU set to 0, so a
#: thin subdural beside the inner table stays a bright rim against a dark skull where in
#: the windows above it merges into the bone once a slice is shrunk (the 1.3.0 candidate
#: in docs/benchmarks.md; not in the shipped model).
BLOOD_WINDOW: tuple = ("blood", 50.0, 60.0, 200.0)


def ct_slice_input(
    stored: np.ndarray,
    slope: float,
    intercept: float,
    windows: Sequence[tuple],
    size: int,
) -> np.ndarray:
    """One CT slice as model input: HU, windows, square, resized. Shape ``(C, size, size)``."""
    channels = multi_window(to_hu(stored, slope, intercept), windows)
    if channels.shape[-2] != channels.shape[-1]:
        channels = pad_to_square(channels, fill=0.0)
    return resize(channels, size)


def slab_average(inputs: np.ndarray, positions: np.ndarray, thickness_mm: float, slab_mm: float) -> np.ndarray:
    """Each slice's input averaged over a slab of ``slab_mm`` centred on it (pure).

    Slice ``j`` (centred at ``positions[j]`` along the slice normal, ``thickness_mm``
    thick) counts with the share of its thickness that lies inside slice ``i``'s slab;
    the weights are normalised, so a 0.625 mm series averages about eight slices, a
    2.5 mm one its neighbours at half weight, and slices at least as thick as the slab
    stay as they are. Shape ``(N, C, S, S)`` in and out; ``positions`` in slice order.
    """
    if thickness_mm >= slab_mm:
        return inputs
    z = np.asarray(positions, dtype=np.float64)
    half_t, half_s = thickness_mm / 2.0, slab_mm / 2.0
    overlap = np.minimum(z[None, :] + half_t, z[:, None] + half_s) - np.maximum(
        z[None, :] - half_t, z[:, None] - half_s
    )
    weights = np.clip(overlap, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)  # a slice always overlaps itself
    flat = inputs.reshape(len(z), -1)
    return banded_rows(bands(weights, ROW_BLOCK), flat).reshape(inputs.shape)


def context_index(positions: np.ndarray, step_mm: float, each_side: int) -> np.ndarray:
    """For each slice, the slices nearest to ``step_mm`` x -k..k away along the normal (pure).

    Shape ``(N, 2k + 1)`` of indices into the series, the slice itself in the middle
    column; beyond either end of the series the end slice stands in (edge replication).
    ``positions`` in slice order.
    """
    z = np.asarray(positions, dtype=np.float64)
    wanted = z[:, None] + step_mm * np.arange(-each_side, each_side + 1)[None, :]
    index = np.abs(wanted[:, :, None] - z[None, None, :]).argmin(axis=2)  # ties: the lower slice
    index[:, each_side] = np.arange(len(z))
    return index


def with_context(inputs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Stack each slice's neighbours (:func:`context_index`) as channels (pure).

    ``(N, C, S, S)`` and ``(M, 2k + 1)`` -> ``(M, (2k + 1) C, S, S)``: the channels of the
    slice ``k`` steps below first, the slice's own in the middle. ``index`` may pick
    rows (a batch) of a series' or a whole split's :func:`context_index`. Every slice
    alone and in order (no context) is ``inputs`` itself, not a copy.
    """
    if index.shape[1] == 1 and len(index) == len(inputs) and np.array_equal(index[:, 0], np.arange(len(inputs))):
        return inputs
    rows, columns = inputs.shape[-2:]
    return inputs[index].reshape(len(index), -1, rows, columns)


#: Radiographs are sampled on a grid of about this many points per side to find their
#: percentiles: exact for images up to twice that, a 5x5 stride for a 3000-pixel CR.
PERCENTILE_SAMPLE_SIDE = 512


def normalize_radiograph(
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    low_percentile: float = 0.5,
    high_percentile: float = 99.5,
    pixel_stride: int = 1,
) -> np.ndarray:
    """Radiograph to [0, 1] with bright = dense, whatever the vendor's scaling.

    Values between the two percentiles map linearly to [0, 1] (clipped);
    ``MONOCHROME1`` images (low values bright) are inverted. The percentiles are those of
    every ``k``-th row and column, ``k = min(rows, columns) // PERCENTILE_SAMPLE_SIDE``
    (at least 1): a quarter of a million samples pin them as well as ten million do.
    With ``pixel_stride`` only every such row and column is returned, mapped with the
    whole image's percentiles: exactly ``normalize_radiograph(stored)[::s, ::s]``
    without converting the pixels in between.
    """
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"unsupported PhotometricInterpretation {photometric!r}")
    stride = max(1, min(stored.shape[-2:]) // PERCENTILE_SAMPLE_SIDE)
    low, high = np.percentile(stored[..., ::stride, ::stride], [low_percentile, high_percentile])
    out = stored[..., ::pixel_stride, ::pixel_stride].astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / max(float(high - low), 1e-6))
    np.clip(out, 0.0, 1.0, out=out)
    if photometric == "MONOCHROME1":
        np.subtract(np.float32(1.0), out, out=out)
    return out


def radiograph_input(stored: np.ndarray, photometric: str, size: int) -> np.ndarray:
    """One radiograph as model input: normalised, square, resized. Shape ``(1, size, size)``."""
    img = normalize_radiograph(stored, photometric)
    return resize(pad_to_square(img, fill=0.0), size)[None]

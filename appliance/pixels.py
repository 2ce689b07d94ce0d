"""Pure pixel arithmetic shared by every stage that touches pixels.

Rescale to Hounsfield units, linear windows (optionally with bone zeroed), padding to a
square and one anti-aliased resampler (a triangle filter whose support widens when
shrinking). The model inputs (:mod:`appliance.triage.preprocess`), the heat-map capture
(:mod:`appliance.report.render`) and the trainer all use these, so a pixel means the
same thing everywhere. Arrays in, new ``float32`` arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def to_hu(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Map stored CT values to Hounsfield units: ``stored * slope + intercept``.

    Parameters
    ----------
    stored : ndarray
        Stored pixel values (any integer or float dtype).
    slope, intercept : float
        DICOM RescaleSlope (0028,1053) and RescaleIntercept (0028,1052).
    """
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window: ``center - width/2`` maps to 0, ``center + width/2`` to 1, clipped."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return _window_into(np.empty(hu.shape, np.float32), hu, center, width)


def _window_into(out: np.ndarray, hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """:func:`window` written into ``out`` (the same float32 arithmetic, no temporaries)."""
    np.subtract(hu, np.float32(center - width / 2.0), out=out, dtype=np.float32)
    np.divide(out, np.float32(width), out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def multi_window(hu: np.ndarray, windows: Sequence[tuple]) -> np.ndarray:
    """Stack one windowed channel per ``(name, center, width)``: shape ``(C, H, W)``.

    A fourth item, ``zero_above`` (HU), sets every pixel denser than that to 0 in its
    channel (bone removed) instead of clipping it to 1.
    """
    out = np.empty((len(windows), *hu.shape), np.float32)
    for channel, (_, center, width, *zero_above) in zip(out, windows, strict=True):
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        _window_into(channel, hu, center, width)
        if zero_above and zero_above[0] is not None:
            channel[hu > np.float32(zero_above[0])] = 0.0
    return out


def pad_to_square(image: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Pad the last two axes symmetrically to a square with ``fill``."""
    h, w = image.shape[-2:]
    n = max(h, w)
    if h == w:
        return image.astype(np.float32)
    top, left = (n - h) // 2, (n - w) // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(top, n - h - top), (left, n - w - left)]
    return np.pad(image.astype(np.float32), pad, constant_values=fill)


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row-normalised triangle-filter weights mapping ``n_in`` samples to ``n_out``, as a
    dense ``(n_out, n_in)`` matrix: the resampler's definition. The filter support widens
    by the scale factor when shrinking (anti-aliasing), so downscaling averages like an
    area filter and upscaling is bilinear."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.arange(n_in, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(src[None, :] - centers[:, None]) / support, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


#: Outputs per block of the banded products below. Measured on a 512 -> 256 resize of
#: four channels (2-core Xeon and EPYC): eight rows and 32 columns at a time were fastest,
#: about four times faster than gathering each output's taps, and the whole matrix at once
#: slower still (mostly zeros).
ROW_BLOCK, COLUMN_BLOCK = 8, 32

#: A weight matrix cut by :func:`bands`.
Bands = tuple[tuple[int, int, int, int, np.ndarray], ...]


def bands(weights: np.ndarray, block: int) -> Bands:
    """A mostly-zero ``(n_out, n_in)`` weight matrix cut into blocks of ``block`` rows, each
    with the columns its non-zero weights reach, as ``(row_lo, row_hi, col_lo, col_hi,
    weights[row_lo:row_hi, col_lo:col_hi])`` (float32) (pure). A row of zeros reaches none."""
    out = []
    for lo in range(0, weights.shape[0], block):
        hi = min(lo + block, weights.shape[0])
        reached = np.flatnonzero(weights[lo:hi].any(axis=0))
        first, last = (int(reached[0]), int(reached[-1]) + 1) if reached.size else (0, 0)
        out.append((lo, hi, first, last, np.ascontiguousarray(weights[lo:hi, first:last], dtype=np.float32)))
    return tuple(out)


def banded_rows(blocks: Bands, x: np.ndarray) -> np.ndarray:
    """``weights @ x`` over ``x``'s axis -2 (its rows; any leading axes are a batch), for
    ``weights`` cut by :func:`bands`: each block multiplies only the rows it reaches (pure)."""
    out = np.empty((*x.shape[:-2], blocks[-1][1], x.shape[-1]), np.float32)
    for lo, hi, first, last, weights in blocks:
        np.matmul(weights, x[..., first:last, :], out=out[..., lo:hi, :])
    return out


def banded_columns(blocks: Bands, x: np.ndarray) -> np.ndarray:
    """``x @ weights.T`` over ``x``'s last axis, for ``weights`` cut by :func:`bands` (pure)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.empty((flat.shape[0], blocks[-1][1]), np.float32)
    for lo, hi, first, last, weights in blocks:
        np.matmul(flat[:, first:last], weights.T, out=out[:, lo:hi])
    return out.reshape(*x.shape[:-1], blocks[-1][1])


@lru_cache(maxsize=64)
def _resample_bands(n_in: int, n_out: int, block: int) -> Bands:
    return bands(_resample_matrix(n_in, n_out), block)


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes to ``shape`` with the anti-aliased linear filter."""
    if image.shape[-2:] == tuple(shape):
        return image.astype(np.float32)
    image = np.asarray(image, dtype=np.float32)  # no copy: the filter writes a new array
    h, w = image.shape[-2:]
    rows = image if h == shape[0] else banded_rows(_resample_bands(h, shape[0], ROW_BLOCK), image)
    return rows if w == shape[1] else banded_columns(_resample_bands(w, shape[1], COLUMN_BLOCK), rows)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to ``(size, size)``: :func:`resample` to a square."""
    return resample(image, (size, size))

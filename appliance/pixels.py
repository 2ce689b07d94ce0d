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


def _triangle(n_in: int, n_out: int) -> np.ndarray:
    """Triangle-filter weights mapping ``n_in`` samples to ``n_out``, not yet normalised
    (float64, ``(n_out, n_in)``). The filter support widens by the scale factor when
    shrinking (anti-aliasing), so downscaling averages like an area filter and upscaling
    is bilinear."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.arange(n_in, dtype=np.float64)
    return np.clip(1.0 - np.abs(src[None, :] - centers[:, None]) / support, 0.0, None)


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row-normalised triangle-filter weights mapping ``n_in`` samples to ``n_out``: the
    resampler's definition, as a dense matrix."""
    weights = _triangle(n_in, n_out)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=64)
def _resample_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero band of :func:`_resample_matrix` as (indices, weights), each
    ``(n_out, taps)``: the same filter, applied by gathering a few neighbours instead of
    multiplying by a mostly-zero matrix (a 512 -> 128 resize touches 8 inputs per output,
    not 512). Each row is normalised over its own band, so two outputs with the same
    taps get the same weights to the bit (:func:`_regular_band` relies on it)."""
    raw = _triangle(n_in, n_out)
    nonzero = raw != 0
    first = nonzero.argmax(axis=1)
    taps = int((nonzero.shape[1] - nonzero[:, ::-1].argmax(axis=1) - first).max())
    index = np.minimum(first[:, None] + np.arange(taps)[None, :], n_in - 1)
    weights = np.take_along_axis(raw, index, axis=1)
    weights[first[:, None] + np.arange(taps)[None, :] > n_in - 1] = 0.0
    return index, (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=64)
def _regular_band(n_in: int, n_out: int) -> tuple[int, int, int]:
    """The outputs ``lo:hi`` whose taps are the middle output's, shifted by ``step`` inputs
    per output (an integer scale factor away from the borders), as ``(lo, hi, step)``;
    ``hi - lo < 2`` when there are none. Those outputs read strided views, no gather."""
    index, weights = _resample_taps(n_in, n_out)
    mid = n_out // 2
    step = int(index[mid, 0] - index[mid - 1, 0]) if n_out >= 3 else 0
    if step < 1:  # fewer than three outputs, or enlarging a single input
        return mid, mid, 0
    shifted = index[mid][None, :] + (np.arange(n_out) - mid)[:, None] * step
    same = (weights == weights[mid]).all(axis=1) & (index == shifted).all(axis=1)
    lo, hi = mid, mid
    while lo > 0 and same[lo - 1]:
        lo -= 1
    while hi < n_out and same[hi]:
        hi += 1
    return lo, hi, step


def _resample_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """One axis resampled. The outputs of a regular band add their taps in tap order, as
    the gathering ``einsum`` does at the sizes the models use (a test compares the bytes)."""
    index, weights = _resample_taps(image.shape[axis], size)
    lo, hi, step = _regular_band(image.shape[axis], size)
    moved = np.moveaxis(image, axis, -1)
    if hi - lo < 2:
        return np.moveaxis(np.einsum("...ot,ot->...o", moved[..., index], weights, optimize=False), -1, axis)
    shape = list(image.shape)
    shape[axis] = size
    out = np.empty(shape, np.float32)
    for edge in (slice(0, lo), slice(hi, size)):
        edges = np.einsum("...ot,ot->...o", moved[..., index[edge]], weights[edge], optimize=False)
        np.moveaxis(out, axis, -1)[..., edge] = edges
    along = (slice(None),) * (axis % image.ndim)
    band = out[(*along, slice(lo, hi))]
    first, count = int(index[lo, 0]), hi - lo

    def tap_view(tap: int) -> np.ndarray:  # input ``first + tap + step * k`` for output ``lo + k``
        start = first + tap
        return image[(*along, slice(start, start + step * (count - 1) + 1, step))]

    np.multiply(tap_view(0), weights[lo, 0], out=band)
    term = np.empty_like(band)
    for tap in range(1, weights.shape[1]):
        band += np.multiply(tap_view(tap), weights[lo, tap], out=term)
    return out


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes to ``shape`` with the anti-aliased linear filter."""
    if image.shape[-2:] == tuple(shape):
        return image.astype(np.float32)
    image = np.asarray(image, dtype=np.float32)  # no copy: the filter writes a new array
    rows = _resample_axis(image, shape[0], -2)
    return np.ascontiguousarray(_resample_axis(rows, shape[1], -1), dtype=np.float32)  # stacks without reordering


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to ``(size, size)``: :func:`resample` to a square."""
    return resample(image, (size, size))

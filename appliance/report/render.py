"""Pixels of the heat-map capture: grey key slice, coloured heat map, burned-in text.

Pure NumPy and Pillow; arrays in, arrays out. Resampling and windows are
:mod:`appliance.pixels`, the same arithmetic the model inputs use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from appliance.pixels import resample, window

_ALPHA = (0.35, 0.65)  # overlay opacity at the floor and at 1.0
#: The long side of the capture is brought into this range (pixels), aspect kept.
DISPLAY_LONG_SIDE = (512, 1024)
_BANNER = (255, 255, 0)
_TEXT = (255, 255, 255)


def display_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Capture size for a slice of ``shape``: small ones enlarged, large ones reduced."""
    low, high = DISPLAY_LONG_SIDE
    long_side = max(shape)
    target = min(max(long_side, low), high)
    rows, columns = shape
    return max(1, round(rows * target / long_side)), max(1, round(columns * target / long_side))


def heatmap_over(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The heat map resampled onto an image of ``shape``.

    A heat map with the image's aspect ratio is stretched over it. A square heat map
    over a non-square image is taken to cover the image padded symmetrically to a
    square (what the model saw, see ``appliance.pixels.pad_to_square``): it is resampled to
    that square and the padding cropped away.

    Raises
    ------
    ValueError
        If the heat map is neither square nor of the image's aspect ratio.
    """
    h, w = shape
    hh, hw = heatmap.shape
    if abs(hh / hw - h / w) <= max(1.0 / hh, 1.0 / hw, 1.0 / h, 1.0 / w):
        return resample(heatmap, shape)
    if hh != hw:
        raise ValueError(f"heat map {hh}x{hw} fits neither the {h}x{w} image nor its padded square")
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    return resample(heatmap, (n, n))[top : top + h, left : left + w]


def grey(pixels: np.ndarray, center: float, width: float, photometric: str) -> np.ndarray:
    """Rescaled pixels through the window to [0, 1], bright = high unless MONOCHROME1."""
    out = window(pixels, center, width).astype(np.float64)
    return 1.0 - out if photometric == "MONOCHROME1" else out


def heat_floor(threshold: float, heat: np.ndarray, flagged: bool) -> float:
    """The heat level from which the map is drawn, tied to the operating point (pure).

    The heat map is the sigmoid of the class-activation map, and an image's logit pools
    its CAM with a smooth maximum that never exceeds the CAM's peak; so on a flagged
    series' key slice (score >= threshold) some heat reaches ``threshold``. The floor is
    therefore ``threshold``, lowered to the map's peak on a flagged series when resampling
    has shaved the peak, so a flagged series always shows where.
    """
    peak = float(heat.max()) if heat.size else 0.0
    return min(threshold, peak) if flagged else threshold


def overlay(grey_image: np.ndarray, heat: np.ndarray, floor: float) -> np.ndarray:
    """RGB uint8: the grey image, tinted red (at ``floor``) to yellow (at 1) where heat is at least ``floor``."""
    level = np.clip((heat - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    alpha = np.where(heat >= floor, _ALPHA[0] + (_ALPHA[1] - _ALPHA[0]) * level, 0.0)[..., None]
    colour = np.stack([np.ones_like(level), level, np.zeros_like(level)], axis=-1)
    rgb = (1.0 - alpha) * grey_image[..., None] + alpha * colour
    return np.round(rgb * 255.0).astype(np.uint8)


_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(draw: ImageDraw.ImageDraw, text: str, size: int, max_width: int) -> _Font:
    # The largest size up to ``size`` at which ``text`` fits in ``max_width``, at least 8.
    font = ImageFont.load_default(size=size)
    length = draw.textlength(text, font=font)
    while size > 8 and length > max_width:
        size = max(8, min(size - 1, int(size * max_width / length)))
        font = ImageFont.load_default(size=size)
        length = draw.textlength(text, font=font)
    return font


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: _Font, max_width: int) -> list[str]:
    # ``text`` split at spaces into lines that each fit ``max_width`` at ``font`` (a word
    # longer than the width keeps a line of its own, and _font shrinks it).
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [text]


def _layout(width: int, banner: str, lines: Sequence[str]) -> tuple[int, _Font, list[tuple[_Font, str]]]:
    # The margin, the banner's font, and each burned-in line with its font. A line too long
    # for the width wraps at the lines' size rather than shrinking: the verdict is the line
    # a reader needs most, and the longest (a finding with its qualifiers).
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = max(2, width // 64)
    room = width - 2 * margin
    banner_font = _font(scratch, banner, max(10, width // 14), room)
    size = max(8, width // 32)
    base = ImageFont.load_default(size=size)
    placed = [
        (_font(scratch, piece, size, room), piece) for line in lines for piece in _wrap(scratch, line, base, room)
    ]
    return margin, banner_font, placed


def bands(width: int, banner: str, lines: Sequence[str]) -> tuple[int, int]:
    """The heights of the band above the image (the banner) and below it (the lines) that
    :func:`burn_in` adds to an image ``width`` wide (pure)."""
    margin, banner_font, placed = _layout(width, banner, lines)
    top = int(banner_font.getbbox(banner)[3]) + 2 * margin
    bottom = sum(int(f.getbbox(line)[3]) + 1 for f, line in placed) + 2 * margin
    return top, bottom


def burn_in(rgb: np.ndarray, banner: str, lines: Sequence[str]) -> np.ndarray:
    """The image between two black bands (:func:`bands`): ``banner`` large and yellow in
    the band above, ``lines`` in white in the band below, so no text covers the anatomy.
    Sizes follow the image width; a line too long for it wraps at spaces."""
    height, width = rgb.shape[:2]
    margin, banner_font, placed = _layout(width, banner, lines)
    top, bottom = bands(width, banner, lines)
    canvas = np.zeros((top + height + bottom, width, 3), np.uint8)
    canvas[top : top + height] = rgb
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    x = (width - draw.textlength(banner, font=banner_font)) / 2
    stroke = max(1, width // 256)
    draw.text((x, margin), banner, font=banner_font, fill=_BANNER, stroke_width=stroke, stroke_fill=(0, 0, 0))
    y: float = top + height + margin
    for font, line in placed:
        draw.text((margin, y), line, font=font, fill=_TEXT, stroke_width=1, stroke_fill=(0, 0, 0))
        y += font.getbbox(line)[3] + 1
    return np.asarray(image, dtype=np.uint8).copy()

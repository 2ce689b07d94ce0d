"""Read stored instances back for inference: header facts and decoded pixels.

Every transfer syntax the listener accepts decodes here (pydicom with pylibjpeg,
openjpeg, libjpeg, jpeg-ls and rle plugins). A failure is a :class:`DecodeError` naming
the instance and the reason, which ends the series as ``failed`` — never a silent
negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

from appliance.errors import DecodeError

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
#: Decoder plugins chosen over pydicom's own pick, by transfer syntax. For JPEG-LS pydicom
#: takes pylibjpeg's libjpeg, which took 1.19 s for a 2826x2355 chest radiograph where
#: CharLS (pyjpegls) took 0.27 s; both are lossless decoders of the same standard.
DECODING_PLUGINS = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}


@dataclass(frozen=True)
class Slice:
    """One decoded image with what preprocessing needs."""

    dataset: Dataset  # header (pixel data dropped after decoding)
    pixels: np.ndarray  # stored values, 2-D
    slope: float
    intercept: float
    photometric: str
    position: float  # along the slice normal when known, else the instance number


def check_transfer_syntax(path: Path, negotiated: str) -> None:
    """Refuse a file that pydicom would decode under another transfer syntax than the one
    negotiated for it (recorded in ``instances``): group 0002 elements at the start of the
    dataset are read as File Meta and override ours. The listener refuses those (0xC216);
    this keeps the worker from trusting the file over the index all the same.

    Raises
    ------
    DecodeError
        Naming both syntaxes.
    """
    try:
        found = str(read_file_meta_info(path).get("TransferSyntaxUID", ""))
    except Exception as exc:
        raise DecodeError(f"{path.name}: cannot read File Meta: {type(exc).__name__}: {exc}") from exc
    if found != negotiated:
        raise DecodeError(f"{path.name}: file says transfer syntax {found or 'none'}, negotiated {negotiated}")


def read_header(path: Path) -> Dataset:
    """The dataset without pixel data (cheap)."""
    return pydicom.dcmread(path, stop_before_pixels=True)


def _position(ds: Dataset) -> float:
    try:
        position = [float(v) for v in ds.ImagePositionPatient]
        orientation = [float(v) for v in ds.ImageOrientationPatient]
        normal = np.cross(orientation[:3], orientation[3:])
        return float(np.dot(normal, position))
    except (AttributeError, TypeError, ValueError):
        return float(getattr(ds, "InstanceNumber", 0) or 0)


def decode_instance(path: Path) -> list[Slice]:
    """Decode one stored instance into its frames (one :class:`Slice` per frame)."""
    try:
        ds = pydicom.dcmread(path)
        plugin = DECODING_PLUGINS.get(ds.file_meta.get("TransferSyntaxUID", ""), "")
        pixels = pixel_array(ds, decoding_plugin=plugin)  # Dataset.pixel_array adds 0.5 ms of bookkeeping
    except Exception as exc:
        raise DecodeError(f"{path.name}: cannot decode pixels: {type(exc).__name__}: {exc}") from exc
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in GREYSCALE:  # PALETTE COLOR frames are indices into a colour table
        raise DecodeError(f"{path.name}: PhotometricInterpretation {photometric!r} is not greyscale")
    frames = pixels if pixels.ndim == 3 and int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else pixels[None]
    if frames.ndim != 3:
        raise DecodeError(f"{path.name}: expected greyscale frames, got shape {pixels.shape}")
    del ds.PixelData
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    base = _position(ds)
    return [Slice(ds, frame, slope, intercept, photometric, base + i) for i, frame in enumerate(frames)]

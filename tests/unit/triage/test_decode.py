"""Every transfer syntax the listener accepts decodes for inference: pydicom's test files,
and greyscale JPEG baseline / lossless made by dcmtk's dcmcjpeg (pydicom ships those only
in colour, which the models do not take)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.errors import DecodeError
from appliance.receive.negotiation import ACCEPTED_TRANSFER_SYNTAXES
from appliance.triage.decode import DECODING_PLUGINS, check_transfer_syntax, decode_instance
from tests.helpers.series import ct_dataset

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SAMPLES = {
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.4.51": "JPGExtended.dcm",
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless_08.dcm",
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",
}


DCMCJPEG = {
    "1.2.840.10008.1.2.4.50": ["+eb"],
    "1.2.840.10008.1.2.4.57": ["+el", "+sv", "1"],
    "1.2.840.10008.1.2.4.70": ["+e1"],
}


def test_every_accepted_syntax_is_covered():
    assert set(SAMPLES) | set(DCMCJPEG) == {str(ts) for ts in ACCEPTED_TRANSFER_SYNTAXES}


def grey_8bit(path: Path) -> None:
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.clip(np.arange(64 * 64).reshape(64, 64) % 251, 0, 255).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("syntax", sorted(SAMPLES) + sorted(DCMCJPEG))
def test_decodes(syntax, tmp_path):
    if syntax in DCMCJPEG:
        grey_8bit(tmp_path / "plain.dcm")
        path = tmp_path / "compressed.dcm"
        subprocess.run(["dcmcjpeg", *DCMCJPEG[syntax], str(tmp_path / "plain.dcm"), str(path)], check=True)
    else:
        path = FILES / SAMPLES[syntax]
    assert str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    frames = decode_instance(path)
    assert frames and all(np.isfinite(f.pixels.astype(np.float64)).all() for f in frames)
    assert frames[0].pixels.shape[:2] == (frames[0].dataset.Rows, frames[0].dataset.Columns)


def test_truncated_pixel_data_is_a_decode_error(tmp_path):
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.raises(DecodeError, match="cannot decode pixels"):
        decode_instance(tmp_path / "cut.dcm")


def test_palette_colour_is_a_decode_error_that_says_so(tmp_path):
    """Issue 13, item 8. Before: the indices decoded as greyscale and preprocessing raised a
    bare ValueError, reported as "internal error"."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(tmp_path / "palette.dcm", enforce_file_format=True)
    with pytest.raises(DecodeError, match="PhotometricInterpretation 'PALETTE COLOR' is not greyscale"):
        decode_instance(tmp_path / "palette.dcm")


def test_a_file_whose_dataset_overrides_its_transfer_syntax_is_refused(tmp_path):
    """Issue 13, item 5 (worker side). Before: pydicom read (0002,0010) at the start of the
    dataset as File Meta and decoded the rest as Big Endian."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.save_as(tmp_path / "ok.dcm", enforce_file_format=True)
    check_transfer_syntax(tmp_path / "ok.dcm", ExplicitVRLittleEndian)
    data = (tmp_path / "ok.dcm").read_bytes()
    start = data.index(struct.pack("<HH", 0x0008, 0x0016))  # the dataset's first element
    value = b"1.2.840.10008.1.2.2\x00"
    override = struct.pack("<HH", 0x0002, 0x0010) + b"UI" + struct.pack("<H", len(value)) + value
    (tmp_path / "tampered.dcm").write_bytes(data[:start] + override + data[start:])
    with pytest.raises(DecodeError, match="file says transfer syntax 1.2.840.10008.1.2.2, negotiated"):
        check_transfer_syntax(tmp_path / "tampered.dcm", ExplicitVRLittleEndian)


@pytest.mark.parametrize("syntax", sorted(DECODING_PLUGINS))
def test_jpeg_ls_is_decoded_by_charls_and_gives_what_pydicom_s_own_pick_gives(syntax):
    """CharLS (pyjpegls) is the chosen decoder, installed and taking this syntax; its
    pixels are those of the decoder pydicom would take by itself."""
    assert DECODING_PLUGINS[syntax] in get_decoder(syntax).available_plugins
    path = FILES / SAMPLES[str(syntax)]
    [image] = decode_instance(path)
    assert np.array_equal(image.pixels, pydicom.dcmread(path).pixel_array)

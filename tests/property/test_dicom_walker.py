"""The dataset walker (appliance.receive.validate) on any bytes: it returns a header or
raises RejectedInstance with a DIMSE failure status, nothing else, whatever it is fed;
and a well-formed image of any size within the bounds is read as it was written."""

from __future__ import annotations

import io
import zlib

from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from appliance.errors import RejectedInstance
from appliance.receive.validate import Limits, inspect_dataset, inspect_deflated, number_of_frames
from tests.helpers.series import ct_dataset

SMALL = Limits(max_rows=512, max_columns=512, max_frames=16, max_pixel_bytes=1 << 20, max_non_pixel_bytes=1 << 16,
               max_inflated_bytes=1 << 20, max_sequence_depth=8)


def encoded(rows: int = 8, columns: int = 8, implicit: bool = False, little: bool = True) -> bytes:
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = bytes(rows * columns * 2)
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, little
    write_dataset(out, ds)
    return out.getvalue()


VALID = encoded()


def walk(data: bytes, implicit: bool = False, little: bool = True):
    try:
        return inspect_dataset(io.BytesIO(data), len(data), implicit, little, SMALL)
    except RejectedInstance as exc:
        assert 0xA700 <= exc.status <= 0xCFFF and str(exc), exc
        return None


@given(st.binary(max_size=4096), st.booleans(), st.booleans())
@example(b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\xff", False, True)  # Pixel Data of undefined length
@example(b"\xfe\xff\x00\xe0\xff\xff\xff\xff" * 50, True, True)  # items without a sequence
def test_any_bytes_are_read_or_refused_with_a_status(data, implicit, little):
    walk(data, implicit, little)


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_valid_dataset_with_bytes_changed_is_read_or_refused(changes):
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    walk(bytes(data))


@given(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=64))
def test_a_valid_dataset_cut_or_spliced_is_read_or_refused(cut, splice):
    walk(VALID[:cut])
    walk(VALID[:cut] + splice + VALID[cut:])


@given(st.binary(max_size=2048))
def test_a_deflated_stream_of_any_content_is_read_or_refused(data):
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    for stream in (raw.compress(data) + raw.flush(), data):
        try:
            inspect_deflated(io.BytesIO(stream), SMALL)
        except RejectedInstance as exc:
            assert 0xA700 <= exc.status <= 0xCFFF


@given(st.integers(1, 64), st.integers(1, 64), st.booleans(), st.booleans())
def test_a_well_formed_image_is_read_as_written(rows, columns, implicit, little):
    header = walk(encoded(rows, columns, implicit, little), implicit, little)
    assert header is not None and (header.rows, header.columns) == (rows, columns)


@given(st.text(max_size=40))
def test_a_frame_count_is_a_positive_integer_or_refused(text):
    try:
        frames = number_of_frames(text)
    except RejectedInstance as exc:
        assert exc.status == 0xC212
    else:
        assert isinstance(frames, int) and frames >= 1

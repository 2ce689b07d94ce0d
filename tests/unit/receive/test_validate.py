from __future__ import annotations

import io
import struct
import sys
import tracemalloc
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from appliance.errors import RejectedInstance
from appliance.receive.validate import (
    Limits,
    check_uid,
    inspect_dataset,
    inspect_deflated,
    number_of_frames,
)
from tests.helpers.series import ct_dataset


def encode(ds: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, ds)
    return buffer.getvalue()


def inspect(data: bytes, implicit=False, little=True, **limits):
    return inspect_dataset(io.BytesIO(data), len(data), implicit, little, Limits(**limits))


@pytest.mark.parametrize(("implicit", "little"), [(False, True), (True, True), (False, False)])
def test_reads_identity_and_image_size_in_every_uncompressed_encoding(implicit, little):
    ds = ct_dataset(generate_uid(), generate_uid(), 3, size=32)
    ds.ContentSequence = Sequence([Dataset()])  # a sequence before the wanted attributes
    header = inspect(encode(ds, implicit, little), implicit, little)
    assert (header.sop_instance_uid, header.study_instance_uid, header.series_instance_uid) == (
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert (header.rows, header.columns, header.bits_allocated, header.number_of_frames) == (32, 32, 16, 1)
    assert (header.modality, header.body_part) == ("CT", "HEAD")


def test_undefined_length_sequences_are_walked(tmp_path):
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    inner = Dataset()
    inner.CodeValue = "x"
    ds.ContentSequence = Sequence([inner])
    ds["ContentSequence"].is_undefined_length = True
    assert inspect(encode(ds)).sop_instance_uid == ds.SOPInstanceUID


def nested(depth: int) -> bytes:
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    item = Dataset()
    item.CodeValue = "leaf"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([item])
        item = outer
    ds.ContentSequence = Sequence([item])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        return encode(ds)
    finally:
        sys.setrecursionlimit(limit)


def test_nesting_within_the_limit_is_fine_and_beyond_it_is_refused():
    assert inspect(nested(10), max_sequence_depth=32).rows == 8
    with pytest.raises(RejectedInstance) as refused:
        inspect(nested(300), max_sequence_depth=32)
    assert refused.value.status == 0xC213


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"Rows": 65535, "Columns": 65535}, 0xC212),
        ({"NumberOfFrames": 20000}, 0xC212),
        ({"SeriesInstanceUID": "1.2.3/../../x"}, 0xC211),
        ({"StudyInstanceUID": "1." + "2" * 70}, 0xC211),
        ({"SOPInstanceUID": "01.2"}, 0xC211),  # leading zero in a component
    ],
)
def test_rule_breakers_get_their_status(changes, status):
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    for key, value in changes.items():
        setattr(ds, key, value)
    with pytest.raises(RejectedInstance) as refused:
        inspect(encode(ds))
    assert refused.value.status == status


def test_a_missing_sop_instance_uid_is_refused_but_missing_series_is_stored():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    del ds.SeriesInstanceUID
    assert inspect(encode(ds)).series_instance_uid == ""
    del ds.SOPInstanceUID
    with pytest.raises(RejectedInstance) as refused:
        inspect(encode(ds))
    assert refused.value.status == 0xC215


def test_truncated_data_is_undecodable():
    data = encode(ct_dataset(generate_uid(), generate_uid(), 0, size=8))
    cut = data[: data.index(b"\x10\x00\x10\x00") + 6]  # inside PatientName's header
    with pytest.raises(RejectedInstance) as refused:
        inspect(cut)
    assert refused.value.status == 0xC210


def test_pixel_bytes_bound_uses_the_declared_size():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.Rows = ds.Columns = 4096
    with pytest.raises(RejectedInstance, match="exceeds 1024"):
        inspect(encode(ds), max_pixel_bytes=1024)


def test_uid_syntax():
    assert check_uid("1.2.840.10008.5.1.4.1.1.2", "x")
    for bad in ["", "1..2", "1.2.", "a.b", "1.2/3", "1.02", "1" * 65]:
        with pytest.raises(RejectedInstance):
            check_uid(bad, "x")


def deflate(data: bytes) -> bytes:
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return raw.compress(data) + raw.flush()


class CountingReader(io.BytesIO):
    """Compressed bytes, counting how many the walk asked for."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.consumed = 0

    def read(self, size=-1):
        data = super().read(size)
        self.consumed += len(data)
        return data


def test_a_deflated_dataset_is_inflated_only_as_far_as_its_cap():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.Rows = ds.Columns = 1000
    ds.PixelData = bytes(2_000_000)
    bomb = deflate(encode(ds))
    assert inspect_deflated(io.BytesIO(bomb), Limits()).rows == 1000
    with pytest.raises(RejectedInstance, match="inflates past 1000000") as refused:
        inspect_deflated(io.BytesIO(bomb), Limits(max_inflated_bytes=1_000_000))
    assert refused.value.status == 0xC214
    with pytest.raises(RejectedInstance, match="corrupt"):
        inspect_deflated(io.BytesIO(b"\xff" * 100), Limits())


def test_a_deflated_pixel_bomb_is_refused_at_the_pixel_data_header_without_inflating_it():
    """Issue 24, P1-L3b / N-deflate-1G / N3-deflate-conc. Before: the whole dataset was
    inflated to a temporary file (1.9 GB of zeros behind Rows = Columns = 64), with up to
    2 GB asked of zlib in one call, and stored with 0x0000."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)
    ds.PixelData = bytes(200 * 1024 * 1024)
    bomb = CountingReader(deflate(encode(ds)))
    tracemalloc.start()
    try:
        with pytest.raises(RejectedInstance, match="is not the declared 8192") as refused:
            inspect_deflated(bomb, Limits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 0xC218
    assert bomb.consumed <= 1 << 20 and peak < 8 * 1024 * 1024


def test_a_deflated_dataset_is_walked_in_bounded_memory():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.Rows = ds.Columns = 8192
    ds.PixelData = bytes(8192 * 8192 * 2)  # 128 MiB of zeros, as declared
    bomb = deflate(encode(ds))
    tracemalloc.start()
    try:
        assert inspect_deflated(io.BytesIO(bomb), Limits()).rows == 8192
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize("pixel_bytes", [0, 8190, 8194, 3 * 1024 * 1024])
def test_native_pixel_data_must_be_the_declared_image(pixel_bytes):
    """Issue 24, P1-big-pixel-3G. Before: any length was stored (3 GiB behind 64 x 64)."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)
    assert inspect(encode(ds)).rows == 64
    ds.PixelData = bytes(pixel_bytes)
    with pytest.raises(RejectedInstance, match=f"Pixel Data of {pixel_bytes} bytes") as refused:
        inspect(encode(ds))
    assert refused.value.status == 0xC218


def test_the_declared_image_counts_frames_samples_bits_and_padding():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 3, 3, 8
    ds.PixelData = bytes(8 * 8 * 3 * 3)
    assert inspect(encode(ds)).number_of_frames == 3
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 3, 3, 1, 1, 8
    ds.PixelData = bytes(10)  # 9 bytes padded to even
    assert inspect(encode(ds)).rows == 3
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(2)  # 16 one-bit pixels
    assert inspect(encode(ds)).rows == 4
    ds.BitsAllocated, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 3, "YBR_FULL_422"
    ds.PixelData = bytes(4 * 4 * 2)
    assert inspect(encode(ds)).rows == 4


def encapsulated(fragment_bytes: int) -> bytes:
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)  # 8 KiB declared
    del ds.PixelData
    return encode(ds) + (
        struct.pack("<HH", 0x7FE0, 0x0010) + b"OB" + struct.pack("<HI", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, fragment_bytes) + bytes(fragment_bytes)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )


def test_encapsulated_pixel_data_is_bounded_by_twice_the_image_and_64_kib_a_frame():
    assert inspect(encapsulated(2 * 8192 + 65536)).rows == 64
    with pytest.raises(RejectedInstance, match="encapsulated Pixel Data over 81920") as refused:
        inspect(encapsulated(2 * 8192 + 65536 + 2))
    assert refused.value.status == 0xC218


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, element) + vr + struct.pack("<HI", 0, len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def refused_status(data: bytes, **limits) -> int:
    with pytest.raises(RejectedInstance) as refused:
        inspect(data, **limits)
    return refused.value.status


def small_ct() -> bytes:
    return encode(ct_dataset(generate_uid(), generate_uid(), 0, size=8))


def undefined_sequence(depth: int, closed: bool = True) -> bytes:
    """(0040,A730) ContentSequence nested ``depth`` deep, undefined lengths throughout."""
    head = struct.pack("<HH", 0x0040, 0xA730) + b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = b""
    for _ in range(depth):
        data = head + item + data + item_end + seq_end
    return data if closed else data[: -len(seq_end)]


@pytest.mark.parametrize(
    ("after_pixels", "status"),
    [
        (explicit_element(0x7FE1, 0x0010, b"LO", b"x" * 2) + undefined_sequence(300), 0xC213),
        (undefined_sequence(3, closed=False), 0xC210),
        (explicit_element(0x0028, 0x0010, b"US", struct.pack("<H", 65535))
         + explicit_element(0x0028, 0x0011, b"US", struct.pack("<H", 65535)), 0xC212),
    ],
    ids=["300-deep-sequence", "sequence-without-delimiter", "second-rows-columns-65535"],
)
def test_what_follows_the_pixel_data_is_walked_under_the_same_rules(after_pixels, status):
    """Issue 13, item 4. Before: the walk stopped at (7FE0,0010), and all three were
    stored with 0x0000 while the worker read them."""
    assert inspect(small_ct()).rows == 8
    assert refused_status(small_ct() + after_pixels) == status


def test_encapsulated_pixel_data_is_skipped_and_what_follows_is_walked():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    del ds.PixelData
    head = encode(ds)
    fragments = (
        struct.pack("<HH", 0x7FE0, 0x0010) + b"OB" + struct.pack("<HI", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)  # empty basic offset table
        + struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    assert inspect(head + fragments).rows == 8
    trailing = explicit_element(0x0028, 0x0010, b"US", struct.pack("<H", 65535))
    assert refused_status(head + fragments + trailing) == 0xC212


def test_file_meta_elements_inside_the_dataset_are_refused():
    """Issue 13, item 5. Before: (0002,0010) Big Endian inside the dataset was stored;
    pydicom then took it as the file's transfer syntax and misread the rest."""
    meta = explicit_element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.2\x00")
    assert refused_status(meta + small_ct()) == 0xC216


@pytest.mark.parametrize("frames", ["NaN", "abc", "9" * 400, "1\\2", "inf"])
def test_a_number_of_frames_that_is_no_integer_is_refused(frames):
    """Issue 13, item 7. Before: each of these was read as 1 frame and stored with 0x0000."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    ds.add_new(0x00280008, "IS", None)
    data = encode(ds)
    element = explicit_element(0x0028, 0x0008, b"IS", b"")
    padded = frames.encode() + (b" " if len(frames) % 2 else b"")
    assert element in data
    data = data.replace(element, explicit_element(0x0028, 0x0008, b"IS", padded))
    assert refused_status(data) == 0xC212


@pytest.mark.parametrize(("frames", "expected"), [("", 1), ("3", 3), (" 3 ", 3), ("3.0", 3), ("+2", 2)])
def test_number_of_frames_as_senders_write_it(frames, expected):
    assert number_of_frames(frames) == expected


def test_bytes_besides_pixel_data_are_capped_and_pixel_bytes_are_not_counted():
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=64)  # 8 KiB of pixels
    assert inspect(encode(ds), max_non_pixel_bytes=4096).rows == 64
    ds.add_new(0x00091010, "OB", bytes(8192))  # a private element of zeros
    with pytest.raises(RejectedInstance, match="besides pixel data") as refused:
        inspect(encode(ds), max_non_pixel_bytes=4096)
    assert refused.value.status == 0xC217


def test_an_invalid_vr_is_refused_naming_it():
    """Issue 13, item 8. Before: stored with 0x0000; pydicom then raised NotImplementedError
    on the element and the series failed as "internal error"."""
    data = small_ct()
    modality = struct.pack("<HH", 0x0008, 0x0060) + b"CS"
    bad = data.replace(modality, modality[:4] + b"ZZ")
    with pytest.raises(RejectedInstance, match=r"invalid VR 'ZZ' on \(0008,0060\)") as refused:
        inspect(bad)
    assert refused.value.status == 0xC210

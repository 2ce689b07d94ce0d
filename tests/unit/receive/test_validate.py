from __future__ import annotations

import io
import sys
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from appliance.receive.validate import Limits, check_uid, inflate_to, inspect_dataset
from appliance.errors import RejectedInstance
from tests.support import ct_dataset


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


def test_inflate_stops_at_the_cap():
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = raw.compress(bytes(10_000_000)) + raw.flush()
    sink = io.BytesIO()
    with pytest.raises(RejectedInstance) as refused:
        inflate_to(io.BytesIO(bomb), sink, 1_000_000)
    assert refused.value.status == 0xC214 and sink.tell() <= 1_000_001
    assert inflate_to(io.BytesIO(bomb), io.BytesIO(), 10_000_000) == 10_000_000
    with pytest.raises(RejectedInstance, match="corrupt"):
        inflate_to(io.BytesIO(b"\xff" * 100), io.BytesIO(), 1000)

"""Check a received dataset before anything trusts it.

:func:`inspect_dataset` walks the encoded data elements without building a pydicom
Dataset: it reads element headers, skips over values, tracks sequence nesting without
recursion, and keeps the handful of top-level attributes the appliance needs. No pixel
buffer is allocated and a hostile nesting depth cannot exhaust the stack. The Pixel Data
value is held to the image the dataset declares, at its header: a native one must be
exactly Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames bytes, an
encapsulated one at most twice that plus 64 KiB a frame. :func:`inspect_deflated` walks a
deflated dataset as it inflates it (:mod:`appliance.receive.sources`), so a refusal comes
before the bytes it is about are inflated. Every refusal is a
:class:`~appliance.errors.RejectedInstance` carrying its DIMSE status.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import dictionary_VR

from appliance import dimse
from appliance.errors import RejectedInstance
from appliance.receive.sources import FileSource, InflatingSource

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: Every VR of PS3.5 6.2; pydicom cannot read an element with any other, so it is refused.
_VRS = _LONG_VRS | {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FD",
    b"FL",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"SL",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"US",
}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: The longest value of a wanted attribute that is read (UIDs are 64 bytes, IS 12);
#: a longer one is refused rather than skipped, so no reader can see a different value.
_MAX_WANTED_BYTES = 1024

_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00080060: "modality",
    0x00180015: "body_part",
    0x0008103E: "series_description",
    0x00280002: "samples_per_pixel",
    0x00280004: "photometric_interpretation",
    0x00280008: "number_of_frames",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
}
_US_TAGS = {0x00280002, 0x00280010, 0x00280011, 0x00280100}
#: Encapsulated Pixel Data may exceed the native image by this much: compressed frames of
#: noise can outgrow their pixels, and each frame carries its own headers and tables.
_ENCAPSULATED_FACTOR = 2
_ENCAPSULATED_FRAME_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every received instance (from ``[dicom]`` settings)."""

    max_rows: int = 16_384
    max_columns: int = 16_384
    max_frames: int = 10_000
    max_pixel_bytes: int = 2 * 1024**3
    max_non_pixel_bytes: int = 64 * 1024**2
    max_inflated_bytes: int = 2 * 1024**3 + 64 * 1024**2
    max_sequence_depth: int = 32


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of a received instance that ingest relies on."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str = ""  # empty when the sender left it out (stored, never triaged)
    series_instance_uid: str = ""
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    rows: int = 0
    columns: int = 0
    number_of_frames: int = 1
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    photometric_interpretation: str = ""


def check_uid(value: str, name: str) -> str:
    """Return ``value`` if it is a valid UID (digits and dots, at most 64 characters).

    Raises
    ------
    RejectedInstance
        0xC211, before the value can reach a file path.
    """
    if len(value) > 64:
        raise RejectedInstance(dimse.INVALID_UID, f"{name} longer than 64 characters")
    if not _UID.match(value):
        raise RejectedInstance(dimse.INVALID_UID, f"{name} is not digits and dots")
    return value


class _Walker:
    """Element-by-element reader of one encoded dataset (no recursion, no big reads)."""

    def __init__(self, source: FileSource | InflatingSource, implicit: bool, little: bool, limits: Limits):
        self.source = source
        self.implicit = implicit
        self.endian = "<" if little else ">"
        self.limits = limits
        self.start = source.tell()
        self.found: dict[str, str | int] = {}
        self.has_pixel_data = False
        self.encapsulated = False
        self.pixel_bytes = 0  # value bytes of top-level pixel data, skipped unread
        self.pixel_cap = 0  # most bytes the top-level encapsulated fragments may hold

    def _read(self, size: int) -> bytes:
        data = self.source.read(size)
        if len(data) != size:
            raise RejectedInstance(dimse.UNDECODABLE, "dataset ends inside an element header")
        return data

    def _header(self, implicit: bool) -> tuple[int, bytes | None, int]:
        group, element = struct.unpack(self.endian + "HH", self._read(4))
        tag = group << 16 | element
        if group == 0xFFFE or implicit:
            (length,) = struct.unpack(self.endian + "I", self._read(4))
            return tag, None, length
        vr = self._read(2)
        if vr not in _VRS:
            raise RejectedInstance(
                dimse.UNDECODABLE, f"invalid VR {vr.decode('latin-1')!r} on ({group:04X},{element:04X})"
            )
        if vr in _LONG_VRS:
            (length,) = struct.unpack(self.endian + "2xI", self._read(6))
        else:
            (length,) = struct.unpack(self.endian + "H", self._read(2))
        return tag, vr, length

    def non_pixel_bytes(self) -> int:
        return self.source.tell() - self.start - self.pixel_bytes

    def _skip(self, length: int, pixels: bool = False) -> None:
        """Skip a value: top-level Pixel Data (``pixels``) or bytes held to the
        non-pixel cap before they are read (or inflated)."""
        if pixels:
            self.pixel_bytes += length
        elif self.non_pixel_bytes() + length > self.limits.max_non_pixel_bytes:
            raise _too_large(self.non_pixel_bytes() + length, self.limits)
        self.source.skip(length)

    def _pixel_data_starts(self, length: int) -> None:
        """Hold top-level Pixel Data to the image declared so far, before its value."""
        self.has_pixel_data = True
        self.encapsulated = length == UNDEFINED
        header = _header_of(self.found)
        check_image_bounds(header, self.limits)
        if self.encapsulated:
            self.pixel_cap = encapsulated_pixel_cap(header)
        else:
            check_native_pixel_length(header, length)

    def _fragment(self, length: int, top_level: bool) -> None:
        if top_level and self.pixel_bytes + length > self.pixel_cap:
            raise RejectedInstance(
                dimse.PIXEL_DATA_LENGTH_MISMATCH,
                f"encapsulated Pixel Data over {self.pixel_cap} bytes (twice the declared image plus 64 KiB a frame)",
            )
        self._skip(length, pixels=top_level)

    def walk(self) -> dict[str, str | int]:
        # Each open container: (kind, end position or None when undefined, implicit VR).
        stack: list[tuple[str, int | None, bool]] = []
        while True:
            position = self.source.tell()
            while stack and stack[-1][1] is not None and position >= stack[-1][1]:
                stack.pop()
            if not stack and self.source.at_end():
                return self.found
            implicit = stack[-1][2] if stack else self.implicit
            in_sequence = bool(stack) and stack[-1][0] == "seq"
            tag, vr, length = self._header(implicit)
            if tag >> 16 == 0x0002:  # pydicom would read it as File Meta and obey it
                raise RejectedInstance(
                    dimse.FILE_META_IN_DATASET,
                    f"File Meta element ({tag >> 16:04X},{tag & 0xFFFF:04X}) inside the dataset",
                )

            if stack and stack[-1][0] == "fragments":  # encapsulated pixel data
                if tag == _ITEM and length != UNDEFINED:
                    self._fragment(length, top_level=len(stack) == 1)
                elif tag == _SEQ_END:
                    stack.pop()
                else:
                    raise RejectedInstance(dimse.UNDECODABLE, f"unexpected tag {tag:08X} in encapsulated pixel data")
                continue
            if in_sequence:
                if tag == _ITEM:
                    stack.append(("item", None if length == UNDEFINED else self.source.tell() + length, implicit))
                elif tag == _SEQ_END and stack[-1][1] is None:
                    stack.pop()
                else:
                    raise RejectedInstance(dimse.UNDECODABLE, f"unexpected tag {tag:08X} in a sequence")
                continue
            if tag == _ITEM_END and stack and stack[-1][1] is None:
                stack.pop()
                continue
            if tag == _PIXEL_DATA and not stack:
                self._pixel_data_starts(length)
            if length == UNDEFINED and (vr in (b"OB", b"OW") or (vr is None and tag == _PIXEL_DATA)):
                # Encapsulated pixel data (top level or in an icon item): its fragments are
                # skipped, and whatever follows is walked under the same rules.
                stack.append(("fragments", None, implicit))
                continue

            is_sequence = vr == b"SQ" or (length == UNDEFINED and vr in (None, b"UN"))
            if vr is None and not is_sequence:
                is_sequence = _implicit_vr(tag) == "SQ"
            if is_sequence:
                depth = sum(1 for kind, _, _ in stack if kind == "seq") + 1
                if depth > self.limits.max_sequence_depth:
                    raise RejectedInstance(
                        dimse.NESTED_TOO_DEEP, f"sequences nested deeper than {self.limits.max_sequence_depth}"
                    )
                # Undefined-length UN is an implicit VR little endian sequence (PS3.5 6.2.2).
                content_implicit = implicit or vr == b"UN"
                stack.append(("seq", None if length == UNDEFINED else self.source.tell() + length, content_implicit))
                continue
            if length == UNDEFINED:
                raise RejectedInstance(dimse.UNDECODABLE, f"undefined length on non-sequence {tag:08X}")
            name = _WANTED.get(tag) if not stack else None
            if name is None:
                self._skip(length, pixels=tag == _PIXEL_DATA and not stack)  # never read here
                continue
            if length > _MAX_WANTED_BYTES:
                raise RejectedInstance(dimse.UNDECODABLE, f"{name} value longer than {_MAX_WANTED_BYTES} bytes")
            value = self._read(length)
            if tag in _US_TAGS:
                if length < 2:
                    raise RejectedInstance(dimse.UNDECODABLE, f"{name} is not a US value")
                self.found[name] = struct.unpack(self.endian + "H", value[:2])[0]
            else:
                self.found[name] = value.decode("ascii", "replace").strip(" \x00")


def _too_large(non_pixel_bytes: int, limits: Limits) -> RejectedInstance:
    return RejectedInstance(
        dimse.DATASET_TOO_LARGE,
        f"{non_pixel_bytes} bytes besides pixel data exceed {limits.max_non_pixel_bytes}",
    )


def _header_of(found: dict[str, str | int]) -> InstanceHeader:
    """The header from the attributes found so far (UIDs unchecked, possibly empty)."""
    frames = number_of_frames(str(found.get("number_of_frames", "")))
    fields = {"sop_class_uid": "", "sop_instance_uid": "", **found, "number_of_frames": frames}
    return InstanceHeader(**fields)  # type: ignore[arg-type]


def _implicit_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def inspect_dataset(
    stream: BinaryIO,
    end: int,
    implicit: bool,
    little: bool,
    limits: Limits,
) -> InstanceHeader:
    """Walk an encoded dataset and check it against ``limits``.

    Parameters
    ----------
    stream : binary file
        Positioned at the first data element; read and seeked, never loaded whole.
    end : int
        Stream position where the dataset ends.
    implicit, little : bool
        The transfer syntax's VR encoding and byte order.
    limits : Limits
        Size and nesting bounds.

    Raises
    ------
    RejectedInstance
        With the specific DIMSE status of the first rule broken.
    """
    return _inspect(_Walker(FileSource(stream, end), implicit, little, limits))


def inspect_deflated(stream: BinaryIO, limits: Limits) -> InstanceHeader:
    """:func:`inspect_dataset` for a Deflated Explicit VR Little Endian dataset, inflated
    a bounded chunk at a time while it is walked (never whole, in memory or on disk);
    more than ``limits.max_inflated_bytes`` inflated is refused (0xC214)."""
    source = InflatingSource(stream, limits.max_inflated_bytes)
    return _inspect(_Walker(source, False, True, limits))


def _inspect(walker: _Walker) -> InstanceHeader:
    found = walker.walk()
    if walker.non_pixel_bytes() > walker.limits.max_non_pixel_bytes:
        raise _too_large(walker.non_pixel_bytes(), walker.limits)
    for name in ("sop_class_uid", "sop_instance_uid"):
        if not found.get(name):
            raise RejectedInstance(dimse.MISSING_ATTRIBUTE, f"{name} is missing")
    for name in ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid"):
        if found.get(name):
            check_uid(str(found[name]), name)
    header = _header_of(found)
    check_image_bounds(header, walker.limits)  # again: attributes may follow the Pixel Data
    if walker.has_pixel_data and not walker.encapsulated:
        check_native_pixel_length(header, walker.pixel_bytes)
    return header


_INTEGER_STRING = re.compile(r"^[+-]?[0-9]{1,12}(\.0*)?$")


def number_of_frames(text: str) -> int:
    """NumberOfFrames (IS) as senders really write it: absent or "" is 1, "3" or "3.0" is 3.

    Raises
    ------
    RejectedInstance
        0xC212 for anything else ("NaN", "abc", 400 digits, several values), which a
        reader would otherwise take as 1 frame or as something else entirely.
    """
    text = text.strip(" \x00")
    if not text:
        return 1
    if not _INTEGER_STRING.match(text):
        shown = text if len(text) <= 16 else text[:16] + "..."
        raise RejectedInstance(dimse.IMAGE_TOO_LARGE, f"NumberOfFrames {shown!r} is not an integer string")
    return int(text.split(".")[0])


def check_image_bounds(header: InstanceHeader, limits: Limits) -> None:
    """Refuse declared image sizes beyond ``limits`` (0xC212) before any buffer exists."""
    checks: list[tuple[str, int, int]] = [
        ("Rows", header.rows, limits.max_rows),
        ("Columns", header.columns, limits.max_columns),
        ("NumberOfFrames", header.number_of_frames, limits.max_frames),
    ]
    for name, value, bound in checks:
        if value > bound:
            raise RejectedInstance(dimse.IMAGE_TOO_LARGE, f"{name} {value} exceeds {bound}")
    if header.number_of_frames < 1:
        raise RejectedInstance(dimse.IMAGE_TOO_LARGE, "NumberOfFrames below 1")
    pixel_bytes = native_pixel_bytes(header)
    if pixel_bytes > limits.max_pixel_bytes:
        raise RejectedInstance(
            dimse.IMAGE_TOO_LARGE, f"declared image of {pixel_bytes} bytes exceeds {limits.max_pixel_bytes}"
        )


def native_pixel_bytes(header: InstanceHeader) -> int:
    """Bytes of the declared image uncompressed, before padding to even (PS3.5 8.1.1; pure)."""
    samples = max(header.samples_per_pixel, 1)
    if header.photometric_interpretation == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    bits = header.rows * header.columns * header.number_of_frames * samples * header.bits_allocated
    return (bits + 7) // 8


def check_native_pixel_length(header: InstanceHeader, length: int) -> None:
    """Refuse (0xC218) native Pixel Data whose length is not the declared image's."""
    expected = native_pixel_bytes(header)
    if length not in (expected, expected + expected % 2):
        raise RejectedInstance(
            dimse.PIXEL_DATA_LENGTH_MISMATCH,
            f"Pixel Data of {length} bytes is not the declared {expected} "
            f"(Rows {header.rows} x Columns {header.columns} x SamplesPerPixel {header.samples_per_pixel} "
            f"x BitsAllocated {header.bits_allocated}/8 x NumberOfFrames {header.number_of_frames})",
        )


def encapsulated_pixel_cap(header: InstanceHeader) -> int:
    """Most bytes the fragments of encapsulated Pixel Data may hold (pure)."""
    return _ENCAPSULATED_FACTOR * native_pixel_bytes(header) + _ENCAPSULATED_FRAME_BYTES * header.number_of_frames

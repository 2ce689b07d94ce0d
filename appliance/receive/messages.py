"""Encoding and decoding of the few DIMSE and PDU structures the listener speaks (pure).

Command sets are always Implicit VR Little Endian (PS3.7 6.3.1); PDUs are big endian
(PS3.8 9.3). Association negotiation PDUs are left to pynetdicom's codecs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.uid import generate_uid

from appliance.errors import MalformedMessage

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07

# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
NO_DATASET = 0x0101

# A-ABORT reasons when the service provider aborts (PS3.8 9.3.8)
ABORT_UNRECOGNIZED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06

IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["triage-appliance DICOM implementation"])
IMPLEMENTATION_VERSION = "TRIAGE_0_1"


@dataclass(frozen=True)
class Command:
    """The fields of a received DIMSE command set that the listener uses."""

    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""


def decode_command(data: bytes) -> Command:
    """Parse an Implicit VR Little Endian command set."""
    fields: dict[int, bytes] = {}
    offset, size = 0, len(data)
    while offset < size:
        if offset + 8 > size:
            raise MalformedMessage("command set ends inside an element header")
        tag, length = struct.unpack_from("<II", data, offset)
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # stored as (group, element) little endian
        offset += 8
        if length > size - offset:
            raise MalformedMessage("command element runs past the end of the command set")
        fields[tag] = data[offset : offset + length]
        offset += length

    def us(tag: int) -> int:
        value = fields.get(tag)
        if value is None or len(value) < 2:
            raise MalformedMessage(f"command set lacks ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        return struct.unpack_from("<H", value)[0]

    def ui(tag: int) -> str:
        return fields.get(tag, b"").decode("ascii", "replace").rstrip("\x00 ")

    return Command(
        command_field=us(0x00000100),
        message_id=us(0x00000110),
        has_dataset=us(0x00000800) != NO_DATASET,
        affected_sop_class_uid=ui(0x00000002),
        affected_sop_instance_uid=ui(0x00001000),
    )


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str = "",
    error_comment: str = "",
) -> bytes:
    """Encode a C-STORE-RSP or C-ECHO-RSP command set."""
    body = _implicit(0x00000002, _even(sop_class_uid.encode(), b"\x00"))
    body += _implicit(0x00000100, struct.pack("<H", command_field))
    body += _implicit(0x00000120, struct.pack("<H", message_id))
    body += _implicit(0x00000800, struct.pack("<H", NO_DATASET))
    body += _implicit(0x00000900, struct.pack("<H", status))
    if error_comment:
        comment = error_comment.encode("ascii", "replace")[:64]
        body += _implicit(0x00000902, _even(comment, b" "))
    if sop_instance_uid:
        body += _implicit(0x00001000, _even(sop_instance_uid.encode(), b"\x00"))
    return _implicit(0x00000000, struct.pack("<I", len(body))) + body


def p_data_pdu(context_id: int, is_command: bool, is_last: bool, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU carrying one presentation data value."""
    header = (0x01 if is_command else 0x00) | (0x02 if is_last else 0x00)
    item = struct.pack(">IBB", len(fragment) + 2, context_id, header) + fragment
    return struct.pack(">BBI", P_DATA_TF, 0, len(item)) + item


def iter_pdvs(pdu_body: bytes | memoryview) -> Iterator[tuple[int, bool, bool, memoryview]]:
    """Yield ``(context_id, is_command, is_last, fragment)`` for each PDV of a P-DATA-TF."""
    view = memoryview(pdu_body)
    offset, size = 0, len(pdu_body)
    while offset < size:
        if offset + 6 > size:
            raise MalformedMessage("P-DATA item header truncated")
        length, context_id, header = struct.unpack_from(">IBB", pdu_body, offset)
        if length < 2 or offset + 4 + length > size:
            raise MalformedMessage("P-DATA item length is inconsistent with the PDU")
        yield context_id, bool(header & 0x01), bool(header & 0x02), view[offset + 6 : offset + 4 + length]
        offset += 4 + length


def release_rp_pdu() -> bytes:
    return struct.pack(">BBIi", A_RELEASE_RP, 0, 4, 0)


def abort_pdu(source: int, reason: int) -> bytes:
    """A-ABORT; ``source`` 0 is the service user, 2 the service provider."""
    return struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"UN"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str) -> bytes:
    """Preamble (128 zero bytes), ``DICM`` and the File Meta group (PS3.10 7.1)."""
    body = _explicit(0x00020001, b"OB", b"\x00\x01")
    body += _explicit(0x00020002, b"UI", _even(sop_class_uid.encode(), b"\x00"))
    body += _explicit(0x00020003, b"UI", _even(sop_instance_uid.encode(), b"\x00"))
    body += _explicit(0x00020010, b"UI", _even(transfer_syntax_uid.encode(), b"\x00"))
    body += _explicit(0x00020012, b"UI", _even(IMPLEMENTATION_CLASS_UID.encode(), b"\x00"))
    body += _explicit(0x00020013, b"SH", _even(IMPLEMENTATION_VERSION.encode(), b" "))
    if source_ae:
        body += _explicit(0x00020016, b"AE", _even(source_ae.encode("ascii", "replace"), b" "))
    group_length = _explicit(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body

"""DICOM bytes as an attacker writes them: datasets encoded by hand (elements out of order,
lengths that lie, a deflated stream of any size built in bounded memory), sent over a real
association without pynetdicom decoding or re-encoding them, and raw PDUs."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from scripts.harness import READY_TIMEOUT_S
from tests.helpers.series import ct_dataset

CHUNK = 16 * 1024 * 1024


def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (PS3.5 7.1.2)."""
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return struct.pack("<HH", group, elem) + vr + struct.pack("<HI", 0, len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def header(size: int = 64) -> tuple[Dataset, bytes]:
    """A CT instance without its Pixel Data, and its explicit VR little endian bytes."""
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=size)
    del ds.PixelData
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    from pydicom.filewriter import write_dataset

    write_dataset(out, ds)
    return ds, out.getvalue()


def pixel_data_header(length: int) -> bytes:
    return struct.pack("<HH", 0x7FE0, 0x0010) + b"OW" + struct.pack("<HI", 0, length)


def write_file(path: Path, ds: Dataset, body_parts, syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write File Meta for ``ds`` and then ``body_parts`` (an iterable of bytes) as the
    dataset: deflated in bounded chunks when ``syntax`` is Deflated Explicit VR LE."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    empty = Dataset()
    empty.file_meta = meta
    out = DicomBytesIO()
    dcmwrite(out, empty, enforce_file_format=True)
    with open(path, "wb") as f:
        f.write(out.getvalue())
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15) if syntax == DeflatedExplicitVRLittleEndian else None
        for part in body_parts:
            if isinstance(part, Zeros) and deflater:
                for block in part.deflated(deflater):
                    f.write(block)
            elif isinstance(part, Zeros):
                for _ in range(part.total // CHUNK):
                    f.write(bytes(CHUNK))
                f.write(bytes(part.total % CHUNK))
            else:
                f.write(deflater.compress(part) if deflater else part)
        if deflater:
            f.write(deflater.flush())
    return path


class Zeros:
    """``total`` zero bytes for :func:`write_file`. Deflated, each full 16 MiB chunk is
    compressed once after a full flush (which resets the compressor's history, so the
    same input gives the same bytes) and written as often as needed: gigabytes of
    deflated zeros in a second instead of minutes of zlib."""

    def __init__(self, total: int):
        self.total = total

    def deflated(self, deflater):
        yield deflater.flush(zlib.Z_FULL_FLUSH)
        full, rest = divmod(self.total, CHUNK)
        if full:
            block = deflater.compress(bytes(CHUNK)) + deflater.flush(zlib.Z_FULL_FLUSH)
            for _ in range(full):
                yield block
        yield deflater.compress(bytes(rest))


def associate(port: int, syntax: str = ExplicitVRLittleEndian, abstract: str = CTImageStorage):
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(abstract, [syntax])
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = READY_TIMEOUT_S
    return ae.associate("127.0.0.1", port, ae_title="TRIAGE")


def send_file(assoc, path: Path) -> tuple[int | None, str]:
    """C-STORE the dataset of ``path`` as it is on disk (pynetdicom's chunked send: the
    bytes go out undecoded). (status, error comment); status None when no response came."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        response = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
    if "Status" not in response:
        return None, ""
    return int(response.Status), str(response.get("ErrorComment", ""))


def store_file(port: int, path: Path, syntax: str = ExplicitVRLittleEndian) -> tuple[int | None, str]:
    assoc = associate(port, syntax)
    assert assoc.is_established
    try:
        return send_file(assoc, path)
    finally:
        if assoc.is_established:
            assoc.release()


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def pdv(context: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context, control) + data


def command_set(message_id: int = 1, affected: str = "", command: int = 0x0001) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian, group length first)."""
    def el(tag_elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0x0000, tag_elem, len(value)) + value

    uid = CTImageStorage.encode() + b"\x00"
    inst = (affected or generate_uid()).encode()
    inst += b"\x00" * (len(inst) % 2)
    body = (el(0x0002, uid) + el(0x0100, struct.pack("<H", command)) + el(0x0110, struct.pack("<H", message_id))
            + el(0x0700, struct.pack("<H", 0)) + el(0x0800, struct.pack("<H", 0x0000)) + el(0x1000, inst))
    return el(0x0000, struct.pack("<I", len(body))) + body


def answer_to(raw: bytes, port: int, then_close: bool = True) -> bytes:
    """Send ``raw`` to the listener, half-close, and read what comes back until the
    listener closes (the first PDU type byte tells what it answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT_S) as sock:
        try:
            sock.sendall(raw)
            if then_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the listener closed first: what it sent is still readable
            pass
        return _read_until_closed(sock)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (or resets) the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _read_pdu(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return head
        head += chunk
    (length,) = struct.unpack(">I", head[2:])
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return head + body


def answer_after_association(rq: bytes, raw: bytes, port: int) -> tuple[bytes, bytes]:
    """Associate with ``rq`` (an A-ASSOCIATE-RQ), then send ``raw`` and half-close.
    (the listener's answer to the RQ, what it sent after ``raw`` until it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT_S) as sock:
        sock.sendall(rq)
        accepted = _read_pdu(sock)
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return accepted, _read_until_closed(sock)

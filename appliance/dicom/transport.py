"""Where the appliance changes how pynetdicom receives, and why.

pynetdicom is used as is except for three points of its receive path, all set up by
:func:`install_receive_path` once per listener process:

* Datasets are received in chunks straight into a file in the spool's incoming folder
  (``STORE_RECV_CHUNKED_DATASET``), so memory stays flat whatever the instance size and
  the final rename is on the same file system. Below the free-disk floor the file is not
  even created: the handler then answers 0xA700 and nothing was written.
* A PDU whose declared length exceeds our maximum (plus header) aborts the association at
  once instead of waiting for gigabytes that will never come; a PDU of legal length is
  read with one preallocated buffer rather than 4 KiB appends.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from pynetdicom import _config, dimse_messages
from pynetdicom.dul import DULServiceProvider

from appliance.dicom import spool

LOG = logging.getLogger(__name__)

# PDU types that carry no payload larger than a few KiB (association negotiation, release, abort).
_PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
_NEGOTIATION_PDU_CAP = 1 << 20


class _RefusedFile:
    """Stands in for the incoming file when the disk is below its floor: writes nothing."""

    def __init__(self, directory: Path):
        self.name = str(directory / f"refused-{uuid.uuid4().hex}")  # never created
        self.file = self

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class IncomingFiles:
    """The file factory pynetdicom calls when a C-STORE dataset starts arriving."""

    def __init__(self, directory: Path, min_free_bytes: int):
        self.directory = directory
        self.min_free_bytes = min_free_bytes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if spool.free_bytes(self.directory) < self.min_free_bytes:
            LOG.error("free disk below floor; refusing new instances")
            return _RefusedFile(self.directory)
        return NamedTemporaryFile(delete=False, mode="wb", suffix=".part", dir=self.directory)


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom's PDU reader with a length cap and a single preallocated buffer."""
    sock = self.socket
    try:
        header = _recv_exact(sock, 6)
    except (OSError, TimeoutError):
        self.event_queue.put("Evt17")
        return
    if len(header) < 6:
        self.event_queue.put("Evt17")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    local = self.assoc.acceptor if self.assoc.is_acceptor else self.assoc.requestor
    cap = (local.maximum_length or _NEGOTIATION_PDU_CAP) + 6 * 1024
    if pdu_type not in _PDU_TYPES or length > max(cap, _NEGOTIATION_PDU_CAP):
        LOG.warning("invalid PDU (type 0x%02X, declared length %d): aborting", pdu_type, length)
        self.event_queue.put("Evt19")
        return
    try:
        body = _recv_exact(sock, length)
    except (OSError, TimeoutError):
        self.event_queue.put("Evt17")
        return
    if len(body) != length:
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(header + body)
    except Exception:
        LOG.warning("undecodable PDU: aborting")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _recv_exact(sock: Any, size: int) -> bytearray:
    """Read ``size`` bytes (fewer only if the peer closed)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    raw = sock.socket
    got = 0
    while got < size:
        count = raw.recv_into(view[got:], size - got)
        if not count:
            return buffer[:got]
        got += count
    return buffer


def install_receive_path(incoming: Path, min_free_bytes: int) -> None:
    """Switch this process's pynetdicom to the appliance's receive path (idempotent)."""
    os.makedirs(incoming, exist_ok=True)
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = IncomingFiles(incoming, min_free_bytes)  # type: ignore[attr-defined]
    DULServiceProvider._read_pdu_data = _read_pdu_data  # type: ignore[method-assign]

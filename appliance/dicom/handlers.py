"""pynetdicom event handlers: access control, C-ECHO, C-STORE and association tracking.

The C-STORE path, in order: the dataset arrives straight into a file in the spool's
incoming folder (see :mod:`appliance.dicom.transport`); its elements are checked
(:mod:`appliance.dicom.validate`) before any UID reaches a path; it is hashed; a resend
of identical bytes is acknowledged as is; otherwise the file is fsynced and renamed into
place, the folder fsynced, the row committed with ``synchronous=FULL``, and only then is
0x0000 returned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import evt

from appliance.audit import log as audit_log
from appliance.config import DicomSettings, Peer
from appliance.dicom import spool
from appliance.dicom.index import IngestIndex, ReceivedInstance, StoreOutcome
from appliance.dicom.validate import (
    STATUS_MISSING_ATTRIBUTE,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_MISMATCH,
    STATUS_UNDECODABLE,
    Limits,
    inflate_to,
    inspect_dataset,
)
from appliance.errors import RejectedInstance, StorageError

LOG = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)


def refusal_reason(
    called_ae: str, calling_ae: str, address: str, settings: DicomSettings
) -> tuple[tuple[int, int, int], str] | None:
    """Why an association request must be rejected, or ``None`` to accept it (pure)."""
    if called_ae.strip() != settings.ae_title:
        return REJECT_CALLED_AE, f"called AE title {called_ae.strip()!r} is not ours"
    if settings.open_mode:
        return None
    if any(peer.matches(calling_ae, address) for peer in settings.peers):
        return None
    return REJECT_CALLING_AE, f"calling AE {calling_ae.strip()!r} from {address} is not a configured peer"


def dataset_offset(stream: BinaryIO) -> int:
    """Offset of the dataset in a file written with a preamble and a File Meta group."""
    stream.seek(0)
    head = stream.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise RejectedInstance(STATUS_UNDECODABLE, "received file has no File Meta group length")
    (group_length,) = struct.unpack("<I", head[140:144])
    return 144 + group_length


def sha256_from(stream: BinaryIO, offset: int) -> str:
    """sha256 of everything from ``offset`` to the end, read in chunks."""
    digest = hashlib.sha256()
    stream.seek(offset)
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class AssociationTracker:
    """Which series each open association has carried, for release-based completion."""

    _series: dict[Any, set[str]] = field(default_factory=dict)
    _ids: dict[Any, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, assoc: Any) -> str:
        with self._lock:
            self._series[assoc] = set()
            return self._ids.setdefault(assoc, uuid.uuid4().hex)

    def association_id(self, assoc: Any) -> str:
        with self._lock:
            return self._ids.setdefault(assoc, uuid.uuid4().hex)

    def add(self, assoc: Any, series_uid: str) -> None:
        with self._lock:
            self._series.setdefault(assoc, set()).add(series_uid)

    def close(self, assoc: Any) -> set[str]:
        """Forget ``assoc``; return its series that no other open association carries."""
        with self._lock:
            carried = self._series.pop(assoc, set())
            self._ids.pop(assoc, None)
            others = set().union(*self._series.values()) if self._series else set()
            return carried - others

    def still_sending(self) -> set[str]:
        with self._lock:
            return set().union(*self._series.values()) if self._series else set()


class StoreService:
    """The listener's DICOM services, bound to one index, spool and settings."""

    def __init__(self, settings: DicomSettings, index: IngestIndex, spool_dir: Path):
        self.settings = settings
        self.index = index
        self.spool_dir = spool_dir
        self.tracker = AssociationTracker()
        self.limits = Limits(
            max_rows=settings.max_rows,
            max_columns=settings.max_columns,
            max_frames=settings.max_frames,
            max_pixel_bytes=settings.max_pixel_bytes,
            max_inflated_bytes=settings.max_inflated_bytes,
            max_sequence_depth=settings.max_sequence_depth,
        )

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_closed),
            (evt.EVT_CONN_CLOSE, self.on_closed),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
        ]

    # Associations -----------------------------------------------------------------
    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        address = assoc.requestor.address
        refusal = refusal_reason(rq.called_ae_title, rq.calling_ae_title, address, self.settings)
        if refusal is None:
            return
        (result, source, diagnostic), reason = refusal
        LOG.warning("association rejected: %s", reason)
        audit_log.append(
            self.index.db,
            "association-rejected",
            {"calling_ae": rq.calling_ae_title.strip(), "called_ae": rq.called_ae_title.strip(),
             "address": address, "reason": reason},
        )
        assoc.acse.send_reject(result, source, diagnostic)

    def on_rejected(self, event: evt.Event) -> None:
        """pynetdicom's own rejections (association limit, unsupported protocol)."""
        rq = event.assoc.requestor
        audit_log.append(
            self.index.db,
            "association-rejected",
            {"calling_ae": rq.ae_title.strip(), "address": rq.address,
             "reason": "rejected by the DICOM stack (e.g. association limit reached)"},
        )

    def on_established(self, event: evt.Event) -> None:
        self.tracker.open(event.assoc)

    def on_released(self, event: evt.Event) -> None:
        self.index.mark_released(self.tracker.close(event.assoc))

    def on_closed(self, event: evt.Event) -> None:
        # Aborted or dropped: its series complete by the quiet period alone.
        self.tracker.close(event.assoc)

    # Services ---------------------------------------------------------------------
    def on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def on_store(self, event: evt.Event) -> int | Dataset:
        try:
            outcome = self._store(event)
        except RejectedInstance as exc:
            return self._refuse(event, exc.status, exc.reason)
        except StorageError as exc:
            LOG.error("store failed: %s", exc)
            return self._refuse(event, STATUS_OUT_OF_RESOURCES, str(exc))
        except Exception:  # the association must survive whatever one instance does
            LOG.exception("unexpected failure storing an instance")
            return self._refuse(event, STATUS_UNDECODABLE, "instance could not be processed")
        LOG.debug("instance %s", outcome.value)
        return 0x0000

    def _refuse(self, event: evt.Event, status: int, reason: str) -> Dataset:
        calling = event.assoc.requestor.ae_title.strip()
        LOG.warning("instance refused from %s: 0x%04X %s", calling, status, reason)
        audit_log.append(
            self.index.db, "instance-rejected",
            {"calling_ae": calling, "status": f"0x{status:04X}", "reason": reason},
        )
        response = Dataset()
        response.Status = status
        response.ErrorComment = reason[:64]
        return response

    def _store(self, event: evt.Event) -> StoreOutcome:
        received = Path(event.dataset_path)
        if not received.exists():
            raise RejectedInstance(
                STATUS_OUT_OF_RESOURCES,
                f"free disk below the {self.settings.min_free_disk_mb} MiB floor",
            )
        request = event.request
        transfer_syntax = UID(event.context.transfer_syntax)
        with open(received, "rb") as stream:
            offset = dataset_offset(stream)
            end = stream.seek(0, os.SEEK_END)
            if transfer_syntax == DeflatedExplicitVRLittleEndian:
                with tempfile.TemporaryFile(dir=received.parent) as inflated:
                    stream.seek(offset)
                    size = inflate_to(stream, inflated, self.limits.max_inflated_bytes)
                    inflated.seek(0)
                    header = inspect_dataset(inflated, size, False, True, self.limits)
            else:
                stream.seek(offset)
                header = inspect_dataset(
                    stream, end, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian,
                    self.limits,
                )
            if header.sop_instance_uid != request.AffectedSOPInstanceUID:
                raise RejectedInstance(
                    STATUS_MISSING_ATTRIBUTE, "SOP Instance UID differs from the C-STORE request's"
                )
            if header.sop_class_uid != request.AffectedSOPClassUID:
                raise RejectedInstance(
                    STATUS_SOP_CLASS_MISMATCH, "SOP Class UID differs from the C-STORE request's"
                )
            digest = sha256_from(stream, offset)
        if self.index.stored_sha256(header.sop_instance_uid) == digest:
            return StoreOutcome.DUPLICATE
        final = spool.instance_path(
            self.spool_dir, header.study_instance_uid, header.series_instance_uid,
            header.sop_instance_uid,
        )
        spool.commit_file(received, final)
        assoc = event.assoc
        outcome = self.index.record(
            ReceivedInstance(
                header=header,
                transfer_syntax_uid=str(transfer_syntax),
                size_bytes=end - offset,
                sha256=digest,
                path=final,
                calling_ae=assoc.requestor.ae_title.strip(),
                association_id=self.tracker.association_id(assoc),
            )
        )
        self.tracker.add(assoc, header.series_instance_uid)
        return outcome

"""What the listener does with what it receives: access control, storing, tracking.

:class:`StoreService` knows nothing of sockets; :mod:`appliance.receive.association` calls
it. A received dataset is already in a file in the spool's incoming folder, fsynced, with
its sha256. :meth:`StoreService.store` checks its elements (:mod:`appliance.receive.validate`)
before any UID reaches a path, acknowledges a resend of identical bytes as is, otherwise
renames the file into place, fsyncs the folder and commits the row with
``synchronous=FULL``; only then may the caller answer 0x0000.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from appliance import dimse, failpoints
from appliance.config import DicomSettings
from appliance.errors import IndexBusy, RejectedInstance, StorageError
from appliance.jobs import InstanceArrived
from appliance.receive import spool
from appliance.receive.completion import SeriesTracker
from appliance.receive.index import IngestIndex
from appliance.receive.validate import InstanceHeader, Limits, inspect_dataset, inspect_deflated

LOG = logging.getLogger(__name__)


# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


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


@dataclass(frozen=True)
class ReceivedDataset:
    """A C-STORE dataset received into a file, with what the command said about it."""

    path: Path
    dataset_offset: int
    dataset_size: int
    sha256: str
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str
    association_id: str


class StoreService:
    """The listener's services, bound to one index, spool and settings."""

    def __init__(self, settings: DicomSettings, index: IngestIndex, spool_dir: Path):
        self.settings = settings
        self.index = index
        self.spool_dir = spool_dir
        self.tracker = SeriesTracker()
        self.limits = Limits(
            max_rows=settings.max_rows,
            max_columns=settings.max_columns,
            max_frames=settings.max_frames,
            max_pixel_bytes=settings.max_pixel_bytes,
            max_non_pixel_bytes=settings.max_non_pixel_bytes,
            max_inflated_bytes=settings.inflate_cap,
            max_sequence_depth=settings.max_sequence_depth,
        )

    # Associations -----------------------------------------------------------------
    def audit_rejection(self, calling_ae: str, called_ae: str, address: str, reason: str) -> None:
        LOG.warning("association rejected: %s", reason)
        self.index.audit(
            "association-rejected",
            {"calling_ae": calling_ae.strip(), "called_ae": called_ae.strip(), "address": address, "reason": reason},
        )

    def association_opened(self, association_id: str) -> None:
        self.tracker.open(association_id)

    def association_released(self, association_id: str) -> None:
        self.index.mark_released(self.tracker.close(association_id))

    def association_closed(self, association_id: str) -> None:
        """Aborted or dropped: its series complete by the quiet period alone."""
        self.tracker.close(association_id)

    # C-STORE ----------------------------------------------------------------------
    def store(self, received: ReceivedDataset) -> tuple[int, str]:
        """Check, commit and index one dataset; return ``(status, error comment)``."""
        try:
            status, comment = self._store(received)
        except RejectedInstance as exc:
            return self.refuse(received.calling_ae, exc.status, exc.reason)
        except IndexBusy as exc:  # auditing it would wait on the same lock again
            LOG.warning(
                "instance refused from %s: 0x%04X %s (not audited: database locked)",
                received.calling_ae,
                dimse.OUT_OF_RESOURCES,
                exc,
            )
            return dimse.OUT_OF_RESOURCES, str(exc)
        except StorageError as exc:
            LOG.error("store failed: %s", exc)
            return self.refuse(received.calling_ae, dimse.OUT_OF_RESOURCES, str(exc))
        except (OSError, sqlite3.Error) as exc:  # a full disk under the spool or the database
            LOG.error("store failed: %s", exc)
            return self.refuse(received.calling_ae, dimse.OUT_OF_RESOURCES, f"cannot store the instance: {exc}")
        except Exception:  # the association must survive whatever one instance does
            LOG.exception("unexpected failure storing an instance")
            return self.refuse(received.calling_ae, dimse.UNDECODABLE, "instance could not be processed")
        if status != dimse.SUCCESS:
            LOG.warning("instance from %s stored with warning 0x%04X: %s", received.calling_ae, status, comment)
        return status, comment

    def refuse(self, calling_ae: str, status: int, reason: str) -> tuple[int, str]:
        """Audit a refusal and return the answer. A disk so full that the audit row cannot
        be written either still gets the sender its answer (logged instead)."""
        LOG.warning("instance refused from %s: 0x%04X %s", calling_ae, status, reason)
        try:
            self.index.audit(
                "instance-rejected",
                {"calling_ae": calling_ae, "status": f"0x{status:04X}", "reason": reason},
            )
        except sqlite3.Error as exc:  # the refusal is answered all the same
            LOG.error("refusal not audited (database: %s)", exc)
        return status, reason

    def _store(self, received: ReceivedDataset) -> tuple[int, str]:
        transfer_syntax = UID(received.transfer_syntax_uid)
        end = received.dataset_offset + received.dataset_size
        with open(received.path, "rb") as stream:
            stream.seek(received.dataset_offset)
            if transfer_syntax == DeflatedExplicitVRLittleEndian:
                header = inspect_deflated(stream, self.limits)
            else:
                header = inspect_dataset(
                    stream,
                    end,
                    transfer_syntax.is_implicit_VR,
                    transfer_syntax.is_little_endian,
                    self.limits,
                )
        status, comment = dimse.SUCCESS, ""
        if header.sop_instance_uid != received.sop_instance_uid:
            status, comment = dimse.WARNING_INSTANCE_UID_MISMATCH, "dataset SOP Instance UID differs from the request's"
        if header.sop_class_uid != received.sop_class_uid:
            status, comment = dimse.WARNING_SOP_CLASS_MISMATCH, "dataset SOP Class UID differs from the request's"
        stored = self.index.stored_sha256(header.sop_instance_uid)
        if stored == received.sha256:
            return status, comment  # an identical resend: already durable and indexed
        final = spool.instance_path(
            self.spool_dir,
            header.study_instance_uid,
            header.series_instance_uid,
            header.sop_instance_uid,
        )
        spool.commit_file(received.path, final)
        failpoints.hit("after-file-before-index")
        try:
            self._record(received, header, transfer_syntax, final)
        except sqlite3.Error as exc:  # busy past its timeout, say: the sender is to retry
            if stored is None:
                final.unlink(missing_ok=True)  # no row will ever name it
            busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            raise (IndexBusy if busy else StorageError)(f"index not written ({exc}); send again") from exc
        if header.series_instance_uid:
            self.tracker.add(received.association_id, header.series_instance_uid)
        else:
            LOG.warning("instance from %s has no Series Instance UID: stored, not triaged", received.calling_ae)
        return status, comment

    def _record(self, received: ReceivedDataset, header: InstanceHeader, transfer_syntax: UID, final: Path) -> None:
        self.index.record(
            InstanceArrived(
                sop_instance_uid=header.sop_instance_uid,
                sop_class_uid=header.sop_class_uid,
                study_instance_uid=header.study_instance_uid,
                series_instance_uid=header.series_instance_uid,
                modality=header.modality,
                body_part=header.body_part,
                series_description=header.series_description,
                transfer_syntax_uid=str(transfer_syntax),
                size_bytes=received.dataset_size,
                sha256=received.sha256,
                path=final,
                calling_ae=received.calling_ae,
                association_id=received.association_id,
            )
        )

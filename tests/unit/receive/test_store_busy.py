"""A store that meets a database locked by another process: a status the sender retries on,
and no file left in the spool that no row names."""

from __future__ import annotations

import hashlib
import sqlite3

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.config import DicomSettings
from appliance.db import open_database
from appliance.receive import spool
from appliance.receive.index import IngestIndex
from appliance.receive.store import ReceivedDataset, StoreService
from tests.helpers.series import ct_dataset


def received_file(spool_dir, ds) -> ReceivedDataset:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    path = spool.incoming_dir(spool_dir) / f"{generate_uid()}.part"
    path.write_bytes(data)
    return ReceivedDataset(
        path,
        0,
        len(data),
        hashlib.sha256(data).hexdigest(),
        ExplicitVRLittleEndian,
        ds.SOPClassUID,
        ds.SOPInstanceUID,
        "SENDER",
        "association-1",
    )


def test_a_locked_database_answers_a_retryable_0xa700_and_leaves_no_orphan(tmp_path):
    """Issue 24, R5-sqlite-locked. Before: 0xC210 (not retryable), with the file already
    renamed into the spool and no index row naming it."""
    db = open_database(tmp_path / "appliance.db")
    db.conn.execute("PRAGMA busy_timeout = 100")
    service = StoreService(DicomSettings(), IngestIndex(db), tmp_path / "spool")
    ds = ct_dataset(generate_uid(), generate_uid(), 0, size=8)
    holder = sqlite3.connect(tmp_path / "appliance.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    status, comment = service.store(received_file(tmp_path / "spool", ds))
    assert status == 0xA700 and "send again" in comment
    assert list((tmp_path / "spool").rglob("*.dcm")) == []
    holder.execute("ROLLBACK")
    assert service.store(received_file(tmp_path / "spool", ds)) == (0x0000, "")
    assert len(list((tmp_path / "spool").rglob("*.dcm"))) == 1


def test_a_locked_database_is_answered_without_a_second_wait_to_audit_it(tmp_path):
    """Issue 24, R5: the refusal of a store that met a locked database was audited on the
    same locked database, a second full wait before the sender heard anything."""
    db = open_database(tmp_path / "appliance.db")
    db.conn.execute("PRAGMA busy_timeout = 100")
    service = StoreService(DicomSettings(), IngestIndex(db), tmp_path / "spool")
    statements: list[str] = []
    holder = sqlite3.connect(tmp_path / "appliance.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    db.conn.set_trace_callback(statements.append)
    status, _ = service.store(received_file(tmp_path / "spool", ct_dataset(generate_uid(), generate_uid(), 0, size=8)))
    db.conn.set_trace_callback(None)
    holder.execute("ROLLBACK")
    assert status == 0xA700
    # one write was tried (the index's), not a second one on the same lock (the refusal's audit)
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"], statements

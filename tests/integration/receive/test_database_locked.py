"""A real listener whose database another process holds locked (hostile case R5): the
store is answered 0xA700 (send again) after ``dicom.database_wait_s``, inside the
sender's DIMSE timeout, and goes through once the lock is gone.

Before: the store waited SQLite's 30 s busy timeout, then another 30 s to audit the
refusal on the same locked database; pynetdicom (30 s DIMSE timeout, its default)
aborted the association first and never heard an answer.
"""

from __future__ import annotations

import sqlite3

from pydicom.uid import CTImageStorage
from pynetdicom import AE

from tests.helpers.dimse import fresh, store


def _sender(port: int):
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    return assoc


def test_a_store_meeting_a_locked_database_is_told_to_send_again_within_its_timeout(make_appliance):
    appliance = make_appliance(dicom_database_wait_s="1")
    holder = sqlite3.connect(appliance.data_dir / "appliance.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assoc = _sender(appliance.port)
        ds = fresh()
        status, comment = store(assoc, ds)
        assert status == 0xA700 and "send again" in comment
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store(assoc, ds) == (0x0000, "")
    assoc.release()
    assert list((appliance.data_dir / "spool").rglob("*.dcm")) != []

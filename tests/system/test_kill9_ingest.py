"""kill -9 of the listener in the middle of a 500-instance send loses nothing acknowledged."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE

from tests.support import READY_TIMEOUT_S, ApplianceProcess, ct_dataset


def encoded_sha256(ds) -> str:
    """The sha256 of the dataset as pynetdicom puts it on the wire (explicit VR LE)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def send(port: int, datasets, acknowledged: dict[str, str], after_each=None) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120  # a loaded machine is slow, never lossy
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    for ds in datasets:
        try:
            response = assoc.send_c_store(ds)
        except (RuntimeError, OSError):
            break
        if not assoc.is_established or response.get("Status") != 0x0000:
            break
        acknowledged[ds.SOPInstanceUID] = encoded_sha256(ds)
        if after_each:
            after_each(len(acknowledged))
    if assoc.is_established:
        assoc.release()


def test_kill9_mid_send_then_resend_gives_a_complete_study_without_duplicates(tmp_path: Path):
    study, series = generate_uid(), generate_uid()
    datasets = [ct_dataset(study, series, i, size=64) for i in range(500)]
    process = ApplianceProcess(tmp_path / "data").start()
    try:
        acknowledged: dict[str, str] = {}
        killer = threading.Thread(target=process.kill9)

        def kill_at_200(count: int) -> None:
            """SIGKILL from another thread at the 200th acknowledgement, while the stores go
            on; at the 300th the sender waits for the kill to have happened, so the send is
            cut short however slowly the killing thread gets scheduled."""
            if count == 200:
                killer.start()
            elif count == 300:
                killer.join(READY_TIMEOUT_S)

        send(process.port, datasets, acknowledged, kill_at_200)
        killer.join(READY_TIMEOUT_S)
        assert not killer.is_alive() and 200 <= len(acknowledged) <= 300

        # Every instance that got 0x0000 is on disk with its row and hash.
        with sqlite3.connect(process.data_dir / "appliance.db") as db:
            rows = {uid: (sha, path) for uid, sha, path in
                    db.execute("SELECT sop_instance_uid, sha256, path FROM instances")}
        for uid, sha in acknowledged.items():
            assert rows[uid][0] == sha
            assert Path(rows[uid][1]).is_file()

        process.start()
        rest = [ds for ds in datasets if ds.SOPInstanceUID not in acknowledged]
        send(process.port, rest, acknowledged)
        status = process.status()
        assert len(acknowledged) == 500
        assert status["instances_received"] == 500
        [entry] = status["series"]
        assert entry["instances"] == 500
        with sqlite3.connect(process.data_dir / "appliance.db") as db:
            assert db.execute("SELECT COUNT(DISTINCT sop_instance_uid), COUNT(*) FROM instances").fetchone() == (500, 500)
        leftovers = list((process.data_dir / "spool" / ".incoming").iterdir())
        assert leftovers == []
    finally:
        process.stop()  # a no-op once it is down; never leave a listener behind

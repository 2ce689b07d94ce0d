"""kill -9 of the listener in the middle of a 500-instance send loses nothing acknowledged.

The sender is dcmtk's storescu, one association, its log read line by line: "Sending file"
then "Received Store Response (Success)" is an acknowledgement. pynetdicom as the sender
lost a C-STORE response now and then on a loaded machine ("Received unexpected C-STORE
service message", then a stall until the listener's network timeout): its association's
reactor thread can take the response off the DIMSE queue before ``send_c_store`` waits
for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import signal
import sqlite3
import subprocess
from pathlib import Path

from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import generate_uid

from scripts.harness import READY_TIMEOUT_S, ApplianceProcess, tcp_env
from tests.helpers.series import ct_dataset

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity


def dataset_sha256(path: Path) -> str:
    """sha256 of the dataset part of a DICOM file (what storescu puts on the wire)."""
    with open(path, "rb") as stream:
        read_preamble(stream, False)
        _read_file_meta_info(stream)
        return hashlib.sha256(stream.read()).hexdigest()


def write_study(folder: Path, count: int) -> dict[Path, str]:
    """``count`` CT slices of one series; {file: SOP Instance UID}."""
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    files = {}
    for i in range(count):
        ds = ct_dataset(study, series, i, size=64)
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[path] = ds.SOPInstanceUID
    return files


def send(port: int, files: dict[Path, str], acknowledged: dict[str, str], on_ack=None) -> None:
    """storescu the files over one association; record each acknowledged instance's hash.
    ``on_ack(storescu, count)`` runs as each acknowledgement is read."""
    command = ["storescu", "-v", "-aet", "MODALITY", "-aec", "TRIAGE", "127.0.0.1", str(port),
               *map(str, files)]
    with subprocess.Popen(command, env=tcp_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as storescu:
        # A small pipe keeps storescu at most a few files ahead of what has been read here.
        fcntl.fcntl(storescu.stdout.fileno(), F_SETPIPE_SZ, 4096)
        current = None
        for line in storescu.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response (Success)" in line and current is not None:
                acknowledged[files[current]] = dataset_sha256(current)
                current = None
                if on_ack:
                    on_ack(storescu, len(acknowledged))
        storescu.wait(timeout=READY_TIMEOUT_S)


def test_kill9_mid_send_then_resend_gives_a_complete_study_without_duplicates(tmp_path: Path):
    files = write_study(tmp_path / "study", 500)
    process = ApplianceProcess(tmp_path / "data").start()
    try:
        acknowledged: dict[str, str] = {}

        def kill_at_200(storescu: subprocess.Popen, count: int) -> None:
            """At the 200th acknowledgement read, freeze the sender mid-association, kill -9
            the listener, let the sender run on into the dead connection."""
            if count == 200:
                storescu.send_signal(signal.SIGSTOP)
                process.kill9()
                storescu.send_signal(signal.SIGCONT)

        send(process.port, files, acknowledged, kill_at_200)
        assert 200 <= len(acknowledged) < 500

        # Every instance that got 0x0000 is on disk with its row and hash.
        with sqlite3.connect(process.data_dir / "appliance.db") as db:
            rows = {uid: (sha, path) for uid, sha, path in
                    db.execute("SELECT sop_instance_uid, sha256, path FROM instances")}
        for uid, sha in acknowledged.items():
            assert rows[uid][0] == sha
            assert Path(rows[uid][1]).is_file()

        process.start()
        rest = {path: uid for path, uid in files.items() if uid not in acknowledged}
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

"""A disk that fills while a dataset is being written (issue 23): the store is answered
0xA700 (Refused: out of resources), never an abort; no partial file stays in the spool;
the same association stores the next instance once there is room again.

Two ways to fill the disk: a small tmpfs the test mounts (needs root), and a write that
fails with ENOSPC on any machine."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from appliance import dimse
from appliance.config import load_settings
from appliance.disk import free_bytes
from appliance.receive import spool
from appliance.receive.listener import Listener
from scripts.harness import READY_TIMEOUT_S, free_port
from tests.helpers.dimse import fresh, store
from tests.helpers.series import ct_dataset

#: A slice of about 1 MiB (724 x 724 int16), more than the room the test leaves.
LARGE_SIZE = 724
ROOM_LEFT = 256 * 1024


def start_listener(data_dir: Path) -> Listener:
    settings = load_settings(environ={
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
        "APPLIANCE_DICOM_PEERS": "*@127.0.0.1",
        "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "0",  # no floor: the write itself must hit the full disk
    })
    listener = Listener(settings)
    listener.start()
    return listener


def associate(port: int):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = READY_TIMEOUT_S
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    return assoc


def large_instance():
    return ct_dataset(generate_uid(), generate_uid(), 0, size=LARGE_SIZE)


def stored_instances(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "appliance.db") as db:
        return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


def check_refused_then_usable(listener: Listener, make_room) -> None:
    data_dir = listener.settings.data_dir
    assoc = associate(listener.port)
    try:
        status, comment = store(assoc, large_instance())
        assert status == dimse.OUT_OF_RESOURCES and "cannot write to the spool" in comment
        assert not list(spool.incoming_dir(listener.settings.spool_dir).iterdir())  # no partial file
        make_room()
        assert store(assoc, fresh()) == (dimse.SUCCESS, "")  # same association
    finally:
        assoc.release()
    assert stored_instances(data_dir) == 1


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True, timeout=60)


def test_a_full_tmpfs_answers_out_of_resources_and_the_association_carries_on(small_disk):
    listener = start_listener(small_disk / "data")
    filler = small_disk / "filler"
    try:
        with open(filler, "wb") as out:
            out.write(b"\0" * max(free_bytes(small_disk) - ROOM_LEFT, 0))
        assert free_bytes(small_disk) < LARGE_SIZE * LARGE_SIZE * 2
        check_refused_then_usable(listener, filler.unlink)
    finally:
        listener.stop()


def test_a_write_failing_with_enospc_answers_out_of_resources(tmp_path, monkeypatch):
    listener = start_listener(tmp_path / "data")
    write = spool.IncomingFile.append
    full = [True]

    def append(self, fragment):
        if full[0] and self.dataset_size > ROOM_LEFT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(self, fragment)

    monkeypatch.setattr(spool.IncomingFile, "append", append)
    try:
        check_refused_then_usable(listener, lambda: full.__setitem__(0, False))
    finally:
        listener.stop()


def test_a_file_whose_first_write_fails_is_removed(tmp_path, monkeypatch):
    def no_room(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spool.os, "write", no_room)
    with pytest.raises(OSError):
        spool.IncomingFile(tmp_path, b"DICM")
    assert not list(tmp_path.iterdir())

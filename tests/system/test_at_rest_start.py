"""Encryption at rest, checked at start (issue 23): a real ext4 file system with the
``encrypt`` feature on a loop device, a folder on it with an fscrypt policy (a key added to
the file system's keyring, AES-256-XTS contents), and ``appliance listener`` started on it
and on a plain folder. Needs root (mount, loop devices), as CI runs."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.at_rest import fscrypt_policy
from appliance.compliance import as_text, compliance_report
from appliance.db import open_database
from scripts.harness import REPO, ApplianceProcess

FS_IOC_ADD_ENCRYPTION_KEY = 0xC0506617  # _IOWR('f', 23, struct fscrypt_add_key_arg)
FS_IOC_SET_ENCRYPTION_POLICY = 0x800C6613  # _IOR('f', 19, ...), takes a v2 policy too
KEY_SPEC_IDENTIFIER, AES_256_XTS, AES_256_CTS = 2, 1, 4


def fscrypt_folder(mount_point: Path, folder: Path) -> None:
    """Add a random 512-bit key to the file system and give ``folder`` (empty) a v2 policy."""
    key = os.urandom(64)
    arg = bytearray(struct.pack("II32sII32x", KEY_SPEC_IDENTIFIER, 0, b"", len(key), 0)) + key
    fd = os.open(mount_point, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg)
    finally:
        os.close(fd)
    identifier = bytes(arg[8:24])
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, bytearray(struct.pack("BBBB4x16s", 2, AES_256_XTS, AES_256_CTS,
                                                                                0, identifier)))
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory):
    """A folder with an fscrypt policy on a freshly made, loop-mounted ext4."""
    root = tmp_path_factory.mktemp("at-rest")
    image, mount_point = root / "volume.img", root / "mnt"
    mount_point.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(96 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-O", "encrypt", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
    try:
        fscrypt_folder(mount_point, mount_point / "appliance")
        yield mount_point / "appliance"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def audited(data_dir: Path, kind: str) -> list[dict]:
    conn = open_database(data_dir / "appliance.db").conn
    try:  # closed: an open file keeps the test's file system from unmounting
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM audit_log WHERE kind = ?", (kind,))]
    finally:
        conn.close()


def test_the_listener_runs_on_an_encrypted_folder_and_what_it_writes_is_encrypted(encrypted):
    box = ApplianceProcess(encrypted / "data", allow_unencrypted="false").start()
    try:
        log = box.log.read_text()
        assert f"listener: data folder {box.data_dir} (ext4 /dev/loop" in log
        assert "encrypted by fscrypt (a policy on the folder)" in log
        assert fscrypt_policy(box.data_dir / "spool"), "the spool inherits the folder's policy"
    finally:
        box.stop()
    assert audited(box.data_dir, "storage-unencrypted") == []


def test_a_plain_folder_is_refused_with_the_setting_that_would_allow_it(tmp_path):
    data_dir = tmp_path / "data"
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir), "APPLIANCE_ALLOW_UNENCRYPTED": "false"}
    done = subprocess.run([sys.executable, "-m", "appliance.cli", "listener"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: listener: data folder {data_dir} (")
    assert "not encrypted" in error and "LUKS" in error and "fscrypt" in error
    assert "allow_unencrypted = true (APPLIANCE_ALLOW_UNENCRYPTED=true)" in error
    assert not (data_dir / "appliance.db").exists() and not (data_dir / "spool").exists(), "refused before writing"


def test_allowed_it_runs_warns_audits_and_the_compliance_report_counts_it(tmp_path):
    box = ApplianceProcess(tmp_path / "data", allow_unencrypted="true").start()
    try:
        assert "THE DATA FOLDER IS NOT ENCRYPTED AT REST" in box.log.read_text()
    finally:
        box.stop()
    [event] = audited(box.data_dir, "storage-unencrypted")
    assert event["component"] == "listener" and event["data_dir"] == str(box.data_dir.resolve())
    today = datetime.now(UTC).date()
    text = as_text(compliance_report(open_database(box.data_dir / "appliance.db"), today, today))
    assert "Data at rest: NOT ENCRYPTED at 1 start in the period (allow_unencrypted = true)" in text

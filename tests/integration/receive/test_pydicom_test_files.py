"""Every file that pydicom's wheel ships, sent with dcmtk's dcmsend: whatever dcmtk's own
storescp accepts, the appliance stores too, with the hash of what was sent.

dcmsend re-encodes some files on the way (group lengths dropped, big endian converted),
so "what was sent" is taken from dcmtk's storescp in bit-preserving mode (+B), which
writes each dataset exactly as it came off the wire."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from scripts.harness import free_port, stop_process, tcp_env, wait_for_port

TEST_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
#: Files dcmtk stores but the appliance refuses on purpose, each with the status it gets.
REFUSED_ON_PURPOSE = {
    "badVR.dcm": "NumberOfFrames '1A' is not an integer string (0xC212; issue 13, item 7)",
    "MR_small_padded.dcm": "8,320 bytes of Pixel Data for a 64 x 64 x 16-bit image (0xC218; issue 24)",
}


def accepted(port: int, ae_title: str, path: Path) -> bool:
    out = subprocess.run(
        ["dcmsend", "-v", "-aec", ae_title, "127.0.0.1", str(port), str(path)],
        env=tcp_env(), capture_output=True, text=True, timeout=60,
    )
    text = out.stdout + out.stderr
    return "with status SUCCESS  : 1" in text or "with status WARNING  : 1" in text


def file_dataset(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, dataset bytes) of a file with a File Meta group."""
    with open(path, "rb") as stream:
        read_preamble(stream, False)
        meta = _read_file_meta_info(stream)
        return str(meta.get("TransferSyntaxUID", "")), stream.read()


@pytest.fixture
def dcmtk_storescp(tmp_path):
    port = free_port()
    out = tmp_path / "storescp"
    out.mkdir()
    server = subprocess.Popen(["storescp", "+xa", "+B", "-od", str(out), str(port)], env=tcp_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port, out
    stop_process(server)


def test_every_file_dcmtk_storescp_accepts_is_stored_with_the_received_hash(appliance, dcmtk_storescp):
    assert len(TEST_FILES) >= 78
    storescp_port, received = dcmtk_storescp
    by_dcmtk, by_appliance = set(), set()
    db = sqlite3.connect(appliance.data_dir / "appliance.db")
    for path in TEST_FILES:
        for old in received.iterdir():
            old.unlink()
        wire = None
        if accepted(storescp_port, "ANY", path):
            by_dcmtk.add(path.name)
            [wire] = received.iterdir()
        if not accepted(appliance.port, "TRIAGE", path):
            continue
        by_appliance.add(path.name)
        uid = pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID
        sha, stored, syntax = db.execute(
            "SELECT sha256, path, transfer_syntax_uid FROM instances WHERE sop_instance_uid = ?", (uid,)
        ).fetchone()
        stored_syntax, stored_bytes = file_dataset(Path(stored))
        assert stored_syntax == syntax
        assert hashlib.sha256(stored_bytes).hexdigest() == sha, path.name
        if wire is not None:
            wire_syntax, wire_bytes = file_dataset(wire)
            assert wire_syntax == syntax, path.name
            assert hashlib.sha256(wire_bytes).hexdigest() == sha, path.name
    db.close()
    assert by_dcmtk - set(REFUSED_ON_PURPOSE) <= by_appliance, sorted(by_dcmtk - by_appliance)
    assert not by_appliance & set(REFUSED_ON_PURPOSE)
    assert len(by_appliance) >= 63

"""Hostile DICOM over real associations to a real `appliance listener`: bytes written by
hand and sent undecoded, each refused with its status while the listener stays healthy,
keeps its memory and leaves nothing behind."""

from __future__ import annotations

import sqlite3
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from scripts.harness import REPO, ApplianceProcess, start_process, stop_process
from tests.helpers.dimse import associate_rq, echo, fresh, store
from tests.helpers.hostile import case
from tests.helpers.wire import (
    answer_after_association,
    answer_to,
    associate,
    command_set,
    element,
    header,
    pdu,
    pdv,
    pixel_data_header,
    send_file,
    store_file,
    write_file,
    Zeros,
)

BOMB_BYTES = 1_900_000_000  # P1-L3b: 1.9 GB of zeros behind Rows = Columns = 64
MIB = 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def leftovers(data_dir: Path) -> list[Path]:
    incoming = data_dir / "spool" / ".incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


def instances(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "appliance.db") as db:
        return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


def still_serves(listener: ApplianceProcess) -> None:
    """A normal store right after is accepted and nothing half-written stays."""
    assoc = associate(listener.port)
    assert assoc.is_established
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()
    assert leftovers(listener.data_dir) == []


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """2 MB on the wire: a 64 x 64 CT whose Pixel Data is 1.9 GB of zeros, deflated."""
    ds, head = header(64)
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    return write_file(path, ds, [head, pixel_data_header(BOMB_BYTES), Zeros(BOMB_BYTES)],
                      DeflatedExplicitVRLittleEndian)


@case("P1-L3b")
def test_a_full_size_deflated_pixel_bomb_is_refused_in_bounded_memory(listener, bomb, case_id):
    before = instances(listener.data_dir)
    assert bomb.stat().st_size < 4 * MIB
    status, comment = store_file(listener.port, bomb, DeflatedExplicitVRLittleEndian)
    assert status is not None and status >= 0xA700 and status != 0x0000, (hex(status or 0), comment)
    assert peak_rss_mib(listener.process.pid) < 512
    assert instances(listener.data_dir) == before
    still_serves(listener)


@case("N3-deflate-conc")
def test_three_deflated_bombs_at_once_are_refused_in_bounded_memory(listener, bomb, case_id):
    before = instances(listener.data_dir)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: store_file(listener.port, bomb, DeflatedExplicitVRLittleEndian), range(3)))
    assert all(status not in (None, 0x0000) for status, _ in answers), answers
    assert peak_rss_mib(listener.process.pid) < 768
    assert instances(listener.data_dir) == before
    still_serves(listener)


@case("N-deflate-1G")
def test_a_listener_under_a_1_gib_limit_survives_a_deflated_bomb(tmp_path, bomb, case_id):
    """The shipped unit's MemoryMax=1G, as a 1 GiB limit on the listener's data segment."""
    listener = ApplianceProcess(tmp_path / "data")
    listener.data_dir.mkdir(parents=True)
    listener.process = start_process(
        ["prlimit", f"--data={1024 * MIB}", sys.executable, "-m", "appliance.cli", "listener"],
        listener.log, b"listening as", listener.env, REPO)
    try:
        status, _ = store_file(listener.port, bomb, DeflatedExplicitVRLittleEndian)
        assert status not in (None, 0x0000)
        assert listener.process.poll() is None, listener.log.read_text()[-2000:]
        still_serves(listener)
    finally:
        assert stop_process(listener.process)


AFTER_PIXELS = {
    "rows-after-pixel-data": (element(0x0028, 0x0010, b"US", struct.pack("<H", 65535)), 0xC212),
    "sequence-without-delimiter": (struct.pack("<HH", 0x7FE1, 0x0010) + b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF)
                                   + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF), 0xC210),
    "300-deep-sequence": (b"".join(struct.pack("<HH", 0x7FE1, 0x1010) + b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF)
                                   + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) for _ in range(300)), 0xC213),
}


@case("P1-L4-after-pixel")
def test_what_follows_the_pixel_data_is_refused_over_the_wire(listener, tmp_path, case_id):
    before = instances(listener.data_dir)
    ds, head = header(8)
    pixels = pixel_data_header(8 * 8 * 2) + bytes(8 * 8 * 2)
    for name, (trailer, expected) in AFTER_PIXELS.items():
        path = write_file(tmp_path / f"{name}.dcm", ds, [head, pixels, trailer])
        status, comment = store_file(listener.port, path)
        assert status == expected, (name, hex(status or 0), comment)
    assert instances(listener.data_dir) == before
    still_serves(listener)


@case("P1-L5-meta-group")
def test_file_meta_inside_the_dataset_is_refused_over_the_wire(listener, tmp_path, case_id):
    before = instances(listener.data_dir)
    ds, head = header(8)
    big_endian = element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.2\x00")
    # after the first element: pydicom (and so pynetdicom's sender) would take a leading
    # group 0002 element for part of the File Meta
    first = 8 + struct.unpack("<H", head[6:8])[0]
    path = write_file(tmp_path / "meta.dcm", ds, [head[:first], big_endian, head[first:], pixel_data_header(128),
                                                  bytes(128)])
    status, comment = store_file(listener.port, path)
    assert status == 0xC216 and "(0002,0010)" in comment, (hex(status or 0), comment)
    assert instances(listener.data_dir) == before
    still_serves(listener)


@case("P1-L7-frames")
def test_number_of_frames_that_is_no_count_is_refused_over_the_wire(listener, tmp_path, case_id):
    before = instances(listener.data_dir)
    ds, head = header(8)
    rows = element(0x0028, 0x0010, b"US", struct.pack("<H", 8))
    assert rows in head
    for frames in ("0", "-3", "9" * 400, "1e308", "NaN", "abc"):
        value = frames.encode() + (b" " if len(frames) % 2 else b"")
        marked = head.replace(rows, element(0x0028, 0x0008, b"IS", value) + rows)
        path = write_file(tmp_path / "frames.dcm", ds, [marked, pixel_data_header(128), bytes(128)])
        status, comment = store_file(listener.port, path)
        assert status == 0xC212, (frames, hex(status or 0), comment)
    assert instances(listener.data_dir) == before
    still_serves(listener)


ABORT, REJECT, ACCEPT, PDATA = 0x07, 0x03, 0x02, 0x04


def _malformed_before_association() -> dict[str, bytes]:
    rq = associate_rq()
    return {
        "unknown-pdu-type": pdu(0x55, b"\x00" * 16),
        "p-data-before-association": pdu(PDATA, pdv(1, 0x03, command_set())),
        "release-before-association": pdu(0x05, bytes(4)),
        "empty-associate-rq": pdu(0x01, b""),
        "associate-rq-item-overruns": rq[:6] + rq[6:80] + struct.pack(">BBH", 0x20, 0, 0xFFFF) + bytes(8),
        "associate-rq-cut-short": rq[:40],
        "associate-rq-length-lies": struct.pack(">BBI", 0x01, 0, len(rq)) + rq[6:] + b"extra bytes",
        "pdu-header-only": struct.pack(">BBI", 0x01, 0, 1000),
    }


def _malformed_in_association() -> dict[str, bytes]:
    return {
        "unknown-pdu-type": pdu(0x55, b"\x00" * 16),
        "pdv-for-a-context-never-proposed": pdu(PDATA, pdv(99, 0x03, command_set())),
        "dataset-before-command": pdu(PDATA, pdv(1, 0x02, b"\x08\x00\x18\x00" + bytes(8))),
        "empty-pdv": pdu(PDATA, struct.pack(">I", 0)),
        "pdv-longer-than-pdu": pdu(PDATA, struct.pack(">IBB", 1000, 1, 0x03) + bytes(10)),
        "command-that-is-no-command": pdu(PDATA, pdv(1, 0x03, b"\xff" * 64)),
        "unknown-command-field": pdu(PDATA, pdv(1, 0x03, command_set(command=0x0FFF))),
        "second-associate-rq": associate_rq(),
    }


@case("P1-t1-pdus")
def test_malformed_pdus_are_answered_and_the_next_store_works(listener, case_id):
    before = instances(listener.data_dir)
    """Each malformed PDU is answered (A-ABORT, A-ASSOCIATE-RJ, a failure status) or the
    connection is closed; none leaves the listener stuck, a file behind or memory grown."""
    for name, raw in _malformed_before_association().items():
        answer = answer_to(raw, listener.port)
        assert answer == b"" or answer[0] in (ABORT, REJECT), (name, answer[:16])
        assert echo(listener.port), name
    for name, raw in _malformed_in_association().items():
        accepted, answer = answer_after_association(associate_rq(), raw, listener.port)
        assert accepted[:1] == bytes([ACCEPT]), name
        assert answer == b"" or answer[0] in (ABORT, PDATA), (name, answer[:16])
        assert echo(listener.port), name
    assert peak_rss_mib(listener.process.pid) < 512
    still_serves(listener)
    assert instances(listener.data_dir) == before + 1


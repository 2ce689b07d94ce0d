"""Hostile inputs each get their specific rejection, and a normal store right after works."""

from __future__ import annotations

import socket
import sqlite3
import struct
import sys
import time

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from scripts.harness import READY_TIMEOUT_S, wait_until
from tests.helpers.dimse import fresh, store


def associate(port: int, calling: str = "TESTSCU", contexts=((CTImageStorage, None),), **timeouts):
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes) if syntaxes else ae.add_requested_context(abstract)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeouts.get("timeout", READY_TIMEOUT_S)
    return ae.associate("127.0.0.1", port, ae_title="TRIAGE")


def associate_when_a_slot_is_free(port: int):
    """An established association, retried until the appliance has noticed that the
    previous ones ended (that happens on its own threads, a moment after ours)."""
    return wait_until(lambda: (assoc := associate(port)).is_established and assoc,
                      what="an association slot to be free", interval=0.1)


def audit_kinds(data_dir) -> list[str]:
    with sqlite3.connect(data_dir / "appliance.db") as db:
        return [row[0] for row in db.execute("SELECT kind FROM audit_log ORDER BY seq")]


def instance_count(data_dir) -> int:
    with sqlite3.connect(data_dir / "appliance.db") as db:
        return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"StudyInstanceUID": "1.2.3/../../../etc"}, 0xC211, "digits and dots"),
        ({"SeriesInstanceUID": "1.2." + "3" * 70}, 0xC211, "longer than 64"),
        ({"Rows": 65535, "Columns": 65535}, 0xC212, "Rows 65535"),
    ],
    ids=["path-traversal-uid", "over-long-uid", "huge-image-tiny-pixels"],
)
def test_bad_instance_is_refused_and_the_association_carries_on(appliance, changes, status, words):
    assoc = associate(appliance.port)
    assert assoc.is_established
    got, comment = store(assoc, fresh(**changes))
    assert got == status and words in comment
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()
    assert instance_count(appliance.data_dir) == 1
    assert not list((appliance.data_dir / "spool" / ".incoming").iterdir())
    assert "instance-rejected" in audit_kinds(appliance.data_dir)


def test_sequences_nested_300_deep_are_refused(appliance):
    ds = fresh()
    item = Dataset()
    item.CodeValue = "deep"
    for _ in range(300):
        outer = Dataset()
        outer.ContentSequence = Sequence([item])
        item = outer
    ds.ContentSequence = Sequence([item])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # pydicom encodes nested sequences recursively
    try:
        assoc = associate(appliance.port)
        got, comment = store(assoc, ds)
    finally:
        sys.setrecursionlimit(limit)
    assert got == 0xC213 and "nested deeper" in comment
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()


def test_a_deflate_bomb_is_refused(make_appliance):
    appliance = make_appliance(dicom_max_inflated_bytes="1048576")
    ds = fresh()
    ds.Rows = ds.Columns = 1448
    ds.PixelData = bytes(1448 * 1448 * 2)  # 4 MiB of zeros deflates to a few KiB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = associate(appliance.port, contexts=((CTImageStorage, [DeflatedExplicitVRLittleEndian]),
                                                (CTImageStorage, [ExplicitVRLittleEndian])))
    got, comment = store(assoc, ds)
    assert got == 0xC214 and "inflates past" in comment
    ok = fresh()
    assert store(assoc, ok) == (0x0000, "")
    assoc.release()


def test_a_deflated_dataset_hiding_a_huge_element_is_refused(appliance):
    """Issue 13, item 3 (receive side). Before: a few hundred KiB deflated, carrying 80 MB
    of zeros in one element, passed the flat 2 GiB inflate cap and was stored with 0x0000,
    for the worker to load whole."""
    ds = fresh()
    ds.add_new(0x00091010, "OB", bytes(80 * 1024 * 1024))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = associate(appliance.port, contexts=((CTImageStorage, [DeflatedExplicitVRLittleEndian]),
                                                (CTImageStorage, [ExplicitVRLittleEndian])))
    got, comment = store(assoc, ds)
    assert got == 0xC217 and "besides pixel data" in comment
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()
    assert instance_count(appliance.data_dir) == 1


def test_a_deflated_pixel_bomb_is_refused_for_its_length_and_the_association_carries_on(appliance):
    """Issue 24, P1-L3b / N-deflate-1G / N3-deflate-conc (scaled down). Before: 64 x 64
    declared with far more zeros as Pixel Data was inflated whole and stored with 0x0000."""
    ds = fresh()
    ds.PixelData = bytes(64 * 1024 * 1024)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = associate(appliance.port, contexts=((CTImageStorage, [DeflatedExplicitVRLittleEndian]),
                                                (CTImageStorage, [ExplicitVRLittleEndian])))
    got, comment = store(assoc, ds)
    assert got == 0xC218 and "Pixel Data of 67108864 bytes is not the declared 8192" in comment
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()
    assert instance_count(appliance.data_dir) == 1


def test_raw_pixel_data_longer_than_the_image_is_refused_and_an_oversized_one_cut_off(make_appliance):
    """Issue 24, P1-big-pixel-3G (scaled down: 3 MiB against bounds of 2 MiB). Before: both
    were stored with 0x0000, the oversized one written whole to the spool first."""
    appliance = make_appliance(dicom_max_pixel_bytes="1048576", dicom_max_non_pixel_bytes="1048576")
    assoc = associate(appliance.port)
    got, comment = store(assoc, fresh(PixelData=bytes(1024 * 1024)))
    assert got == 0xC218 and "Pixel Data of 1048576 bytes" in comment
    got, comment = store(assoc, fresh(PixelData=bytes(3 * 1024 * 1024)))
    assert got == 0xC217 and "cut off while receiving" in comment
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()
    assert instance_count(appliance.data_dir) == 1
    assert not list((appliance.data_dir / "spool" / ".incoming").iterdir())


def test_a_small_deflated_instance_is_stored_as_sent(appliance):
    ds = fresh()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = associate(appliance.port, contexts=((CTImageStorage, [DeflatedExplicitVRLittleEndian]),))
    assert store(assoc, ds) == (0x0000, "")
    assoc.release()
    with sqlite3.connect(appliance.data_dir / "appliance.db") as db:
        [(syntax,)] = db.execute("SELECT transfer_syntax_uid FROM instances").fetchall()
    assert syntax == DeflatedExplicitVRLittleEndian


def raw_exchange(port: int, payload: bytes, wait: float = READY_TIMEOUT_S) -> tuple[bytes, float]:
    """Send raw bytes; return what came back before the server closed, and how long it took
    (socket.timeout when the server keeps the connection open for ``wait`` seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received, time.monotonic() - started


def test_a_context_with_no_transfer_syntax_gets_an_associate_ac_refusing_it(appliance):
    """Issue 13, item 9. Before: IndexError in the handler, and the socket closed without a PDU."""
    from tests.helpers.dimse import associate_rq

    with socket.create_connection(("127.0.0.1", appliance.port), timeout=30) as sock:
        sock.sendall(associate_rq(syntaxes=()))
        reply = b""
        while len(reply) < 6 or len(reply) < 6 + struct.unpack(">I", reply[2:6])[0]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply[:1] == b"\x02", reply[:16]  # A-ASSOCIATE-AC
    context = reply.index(b"\x21\x00")  # the presentation context result item
    assert reply[context + 4] == 1 and reply[context + 6] == 0x04  # context 1: transfer syntaxes not supported


def test_an_http_request_on_the_dicom_port_is_aborted(appliance):
    reply, _ = raw_exchange(appliance.port, b"GET / HTTP/1.1\r\nHost: appliance\r\n\r\n")
    assert reply[:1] == b"\x07"  # A-ABORT, unrecognised PDU
    assoc = associate(appliance.port)
    assert store(assoc, fresh()) == (0x0000, "")
    assoc.release()


def test_a_pdu_declaring_4_gib_is_aborted_at_once(make_appliance):
    # Every timeout of the appliance is far longer than the client's wait: the reply can
    # only be the abort for the length, never a timeout, however loaded the machine is.
    appliance = make_appliance(dicom_acse_timeout_s="600", dicom_network_timeout_s="600")
    reply, _ = raw_exchange(appliance.port, b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 64)
    assert reply[:1] == b"\x07"

    assoc = associate(appliance.port)
    assoc.dul.socket.socket.sendall(b"\x04\x00\xff\xff\xff\xff")  # inside an association
    wait_until(lambda: not assoc.is_established, what="the association to end")
    assert assoc.is_aborted
    again = associate(appliance.port)
    assert store(again, fresh()) == (0x0000, "")
    again.release()


def test_an_unknown_calling_ae_is_rejected_and_audited(make_appliance):
    appliance = make_appliance(dicom_peers="MODALITY@127.0.0.1")
    stranger = associate(appliance.port, calling="STRANGER")
    assert stranger.is_rejected
    rejection = stranger.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    started = "storage-unencrypted"  # the listener's own start on the test's plain disk
    assert [k for k in audit_kinds(appliance.data_dir) if k != started] == ["association-rejected"]
    friend = associate(appliance.port, calling="MODALITY")
    assert store(friend, fresh()) == (0x0000, "")
    friend.release()


def test_a_wrong_called_ae_title_is_rejected(appliance):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", appliance.port, ae_title="NOTUS")
    assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 0x07


def test_the_association_limit_refuses_one_more_until_a_slot_is_free(make_appliance):
    appliance = make_appliance(dicom_max_associations="1", dicom_acse_timeout_s="600",
                               dicom_network_timeout_s="600")
    holder = associate(appliance.port)
    assert holder.is_established
    blocked = associate(appliance.port)
    assert blocked.is_rejected and blocked.acceptor.primitive.diagnostic == 0x02  # limit exceeded
    holder.release()
    after = associate_when_a_slot_is_free(appliance.port)
    assert store(after, fresh()) == (0x0000, "")
    after.release()


def test_a_stalled_sender_times_out_and_frees_its_slot(make_appliance):
    appliance = make_appliance(
        dicom_max_associations="1", dicom_acse_timeout_s="1", dicom_network_timeout_s="1.5",
    )
    # Connects and never speaks: closed by the ACSE timeout (raw_exchange fails with
    # socket.timeout if the appliance keeps it open for a minute).
    _, took = raw_exchange(appliance.port, b"")
    assert took >= 1
    # Associates and then stalls, holding the only slot: aborted by the network timeout.
    staller = associate(appliance.port, timeout=600)
    assert staller.is_established
    wait_until(lambda: not staller.is_established, what="the stalled association to be aborted")
    assert staller.is_aborted
    after = associate_when_a_slot_is_free(appliance.port)
    assert store(after, fresh()) == (0x0000, "")
    after.release()


def test_below_the_free_disk_floor_stores_get_a700_and_nothing_is_written(make_appliance):
    appliance = make_appliance(dicom_min_free_disk_mb=str(1 << 40))
    assoc = associate(appliance.port)
    got, comment = store(assoc, fresh())
    assert got == 0xA700 and "floor" in comment
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert instance_count(appliance.data_dir) == 0
    assert not list((appliance.data_dir / "spool" / ".incoming").iterdir())


def test_command_fragments_past_64_kib_abort_the_association(appliance):
    """Issue 13, item 2. Before: command PDVs without the last bit were collected with no
    cap (200 MB from one association raised the listener's RSS by 220 MB)."""
    assoc = associate(appliance.port, timeout=None)
    context_id = assoc.accepted_contexts[0].context_id
    fragment = bytes(16 * 1024)
    pdv = struct.pack(">IBB", len(fragment) + 2, context_id, 0x01) + fragment  # command, not last
    pdu = struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
    raw = assoc.dul.socket.socket
    try:
        for _ in range(64):  # 1 MiB in all, sixteen times the cap
            raw.sendall(pdu)
    except OSError:
        pass  # the appliance aborted and closed while we were still sending
    deadline = time.monotonic() + 60
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    again = associate(appliance.port)
    assert store(again, fresh()) == (0x0000, "")
    again.release()

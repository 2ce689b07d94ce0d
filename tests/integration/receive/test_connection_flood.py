"""Sockets that never associate, or trickle, cannot lock senders out (issue 13, item 1).

Strangers connect from other loopback addresses (127.0.0.2 and up: Linux routes all of
127/8 to lo); the real sender connects from 127.0.0.1, a configured peer's address. Every
wait is a poll with a generous deadline, and every attack is bounded in time by the test.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from pydicom.uid import CTImageStorage
from pynetdicom import AE

from tests.helpers.dimse import associate_rq, fresh, store

LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, service provider, local limit exceeded


def connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed (or reset) the connection; never blocks. Whatever the
    server said before closing (an A-ABORT, say) is read and dropped."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if sock.recv(65536) == b"":
                return True
        except OSError:
            return True
    return False


def real_sender(port: int, address: str = "127.0.0.1", calling: str = "MODALITY", timeout: float | None = 30):
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    return ae.associate("127.0.0.1", port, ae_title="TRIAGE", bind_address=(address, 0))


def rejection(reply: bytes) -> tuple[int, int, int] | None:
    if len(reply) >= 10 and reply[0] == 0x03:
        return reply[7], reply[8], reply[9]
    return None


def send_whole_request(address: str, port: int) -> bytes:
    with connect_from(address, port) as sock:
        sock.settimeout(60)
        sock.sendall(associate_rq())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


def test_a_trickled_association_request_is_cut_at_the_acse_deadline(make_appliance):
    """Before: acse_timeout_s bounded each recv, so one byte every 0.25 s kept the socket
    forever (here the request would complete after ~40 s and be accepted)."""
    appliance = make_appliance(dicom_acse_timeout_s="2", dicom_peers="*@*")
    request = associate_rq()
    sock = connect_from("127.0.0.2", appliance.port)
    try:
        sent = 0
        while sent < len(request) and not closed_by_server(sock):
            try:
                sock.sendall(request[sent:sent + 1])
            except OSError:
                break
            sent += 1
            time.sleep(0.25)
        assert sent < len(request), "the whole request went in: nothing cut the trickle"
        deadline = time.monotonic() + 60
        while not closed_by_server(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert closed_by_server(sock)
    finally:
        sock.close()


def test_a_pdu_trickled_inside_an_association_is_aborted_at_its_deadline(make_appliance):
    """Before: network_timeout_s bounded each recv, so a P-DATA trickled a byte at a time
    held the association (and its slot) for as long as the trickle went on."""
    appliance = make_appliance(dicom_network_timeout_s="2", dicom_dimse_timeout_s="2")
    assoc = real_sender(appliance.port, timeout=None)  # only the appliance may end it
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    pdu = struct.pack(">BBI", 0x04, 0, 1000) + bytes(1000)
    stop_at = time.monotonic() + 40  # the trickle ends here, long before the PDU would
    sent = 0
    try:
        while time.monotonic() < stop_at and assoc.is_established:
            raw.sendall(pdu[sent:sent + 1])
            sent += 1
            time.sleep(0.25)
    except OSError:
        pass
    cut_while_trickling = time.monotonic() < stop_at
    deadline = time.monotonic() + 60
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cut_while_trickling and assoc.is_aborted


def test_connections_beyond_the_per_address_cap_get_an_associate_rj(make_appliance):
    """Before: any one address could hold 4 x max_associations connections, and the next
    connection was closed without a PDU."""
    appliance = make_appliance(dicom_peers="*@*", dicom_max_pending_per_address="3")
    silent = [connect_from("127.0.0.2", appliance.port) for _ in range(3)]
    try:
        assert rejection(send_whole_request("127.0.0.2", appliance.port)) == LIMIT_EXCEEDED
        other = real_sender(appliance.port, address="127.0.0.3")  # another address is not held up
        assert store(other, fresh()) == (0x0000, "")
        other.release()
    finally:
        for sock in silent:
            sock.close()


def test_a_real_sender_is_served_while_strangers_flood_the_port(make_appliance):
    """Before: 4 x max_associations open sockets (8 here) refused every further connection
    with a reset for as long as they trickled."""
    appliance = make_appliance(
        dicom_max_associations="2", dicom_max_pending_connections="8", dicom_max_pending_per_address="4",
        dicom_acse_timeout_s="60",  # long: the attack holds what it gets for the whole test
    )
    request = associate_rq()
    flood: list[socket.socket] = []
    try:
        for host in range(2, 12):  # 10 strangers x 6 connections, each trickling its request
            for _ in range(6):
                flood.append(connect_from(f"127.0.0.{host}", appliance.port))
        for round_ in range(4):
            for sock in flood:
                try:
                    sock.send(request[round_:round_ + 1])
                except OSError:
                    pass
        # The pool is full: one more stranger with a whole request is rejected, transiently.
        assert rejection(send_whole_request("127.0.0.12", appliance.port)) == LIMIT_EXCEEDED
        held = sum(not closed_by_server(sock) for sock in flood)
        assert held >= 8
        # The configured peer's address is not in the strangers' pool: it is served.
        started = time.monotonic()
        assoc = real_sender(appliance.port)
        assert assoc.is_established
        for _ in range(3):
            assert store(assoc, fresh()) == (0x0000, "")
        assoc.release()
        assert time.monotonic() - started < 60
        assert sum(not closed_by_server(sock) for sock in flood) >= 8  # the flood was still on
    finally:
        for sock in flood:
            sock.close()

"""Answer connections the gate turned away with A-ASSOCIATE-RJ, from the accept thread.

A refused connection gets no thread of its own: its socket joins the accept loop's
selector, its A-ASSOCIATE-RQ is read and dropped (so closing sends no reset), and it is
answered "rejected-transient, service provider, local limit exceeded" (PS3.8 9.3.4), as a
standard requestor expects and may retry on. Each waits at most ``wait_s`` for its
request; at most ``capacity`` wait at once, and beyond that a connection is closed at once.
"""

from __future__ import annotations

import selectors
import socket
import struct
from dataclasses import dataclass

from appliance.receive import messages as m
from appliance.receive.association import NEGOTIATION_PDU_CAP

#: A-ASSOCIATE-RJ: rejected-transient (2), service provider presentation (3), local limit exceeded (2).
LIMIT_REJECTION = bytes((m.A_ASSOCIATE_RJ, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02))


@dataclass
class _Waiting:
    deadline: float
    header: bytes = b""
    left: int = -1  # body bytes still to read once the header is in


class Rejector:
    """Refused sockets waiting for their request, registered on ``selector``."""

    def __init__(self, selector: selectors.BaseSelector, wait_s: float, capacity: int = 256):
        self.selector = selector
        self.wait_s = wait_s
        self.capacity = capacity
        self._waiting: dict[socket.socket, _Waiting] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, conn: socket.socket, now: float) -> None:
        if len(self._waiting) >= self.capacity:
            conn.close()
            return
        conn.setblocking(False)
        self._waiting[conn] = _Waiting(now + self.wait_s)
        self.selector.register(conn, selectors.EVENT_READ, self)

    def on_readable(self, conn: socket.socket) -> None:
        state = self._waiting[conn]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if state.left < 0:
            need = 6 - len(state.header)
            state.header += data[:need]
            data = data[need:]
            if len(state.header) < 6:
                return
            pdu_type, _, length = struct.unpack(">BBI", state.header)
            if pdu_type != m.A_ASSOCIATE_RQ or length > NEGOTIATION_PDU_CAP:
                self._close(conn)
                return
            state.left = length
        state.left -= len(data)
        if state.left <= 0:
            try:
                conn.send(LIMIT_REJECTION)
            except OSError:
                pass
            self._close(conn)

    def expire(self, now: float) -> float | None:
        """Close those past their deadline; seconds until the next deadline, if any."""
        for conn, state in list(self._waiting.items()):
            if state.deadline <= now:
                self._close(conn)
        if not self._waiting:
            return None
        return max(0.0, min(state.deadline for state in self._waiting.values()) - now)

    def close_all(self) -> None:
        for conn in list(self._waiting):
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        self._waiting.pop(conn, None)
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

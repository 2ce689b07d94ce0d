"""Which new connections the listener serves while they have not yet associated.

A connection is *pending* from accept until its association is accepted (or it closes).
Pending connections hold a thread and a socket, so they are counted: at most
``max_pending_per_address`` from one source address, and at most ``max_pending_connections``
in all from addresses that no configured peer names. Addresses named by a peer
(``AE@10.1.2.3``) are counted per address only, so strangers filling the common pool never
lock a configured modality out. Each pending connection is bounded in time by the
association request deadline (:mod:`appliance.receive.association`), so a slot taken by a
silent or trickling socket comes back after ``dicom.acse_timeout_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from appliance.config import Peer


def preferred_addresses(peers: Iterable[Peer]) -> frozenset[str]:
    """The source addresses that configured peers name exactly (wildcards name none)."""
    return frozenset(peer.address for peer in peers if peer.address != "*")


class Ticket:
    """One pending connection's place at the gate; :meth:`release` is idempotent."""

    def __init__(self, gate: ConnectionGate, address: str, pooled: bool):
        self._gate = gate
        self.address = address
        self.pooled = pooled
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate._release(self)


class ConnectionGate:
    """Counts pending connections per address and in the common pool (thread-safe).

    Parameters
    ----------
    max_pending : int
        Pending connections allowed in all from addresses not in ``preferred``.
    max_per_address : int
        Pending connections allowed from any one address.
    preferred : frozenset of str
        Addresses of configured peers, counted per address only.
    """

    def __init__(self, max_pending: int, max_per_address: int, preferred: frozenset[str] = frozenset()):
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.preferred = preferred
        self._by_address: dict[str, int] = {}
        self._pooled = 0
        self._lock = threading.Lock()

    def enter(self, address: str) -> Ticket | str:
        """A ticket for a new connection from ``address``, or why it is refused."""
        pooled = address not in self.preferred
        with self._lock:
            held = self._by_address.get(address, 0)
            if held >= self.max_per_address:
                return f"{held} connections from {address} still negotiating (limit {self.max_per_address})"
            if pooled and self._pooled >= self.max_pending:
                return f"{self._pooled} connections still negotiating (limit {self.max_pending})"
            self._by_address[address] = held + 1
            self._pooled += pooled
        return Ticket(self, address, pooled)

    def pending(self) -> int:
        with self._lock:
            return sum(self._by_address.values())

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            left = self._by_address[ticket.address] - 1
            if left:
                self._by_address[ticket.address] = left
            else:
                del self._by_address[ticket.address]
            self._pooled -= ticket.pooled

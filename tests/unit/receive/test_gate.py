from __future__ import annotations

from appliance.config import Peer
from appliance.receive.gate import ConnectionGate, Ticket, preferred_addresses


def test_strangers_share_one_pool_and_configured_peers_stand_outside_it():
    preferred = preferred_addresses([Peer.parse("CT@10.0.0.5"), Peer.parse("*@*")])
    assert preferred == frozenset({"10.0.0.5"})
    gate = ConnectionGate(max_pending=2, max_per_address=2, preferred=preferred)
    first, second = gate.enter("192.0.2.1"), gate.enter("192.0.2.2")
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    assert "limit 2" in gate.enter("192.0.2.3")  # the strangers' pool is full
    peer = [gate.enter("10.0.0.5"), gate.enter("10.0.0.5")]
    assert all(isinstance(t, Ticket) for t in peer)
    assert "from 10.0.0.5" in gate.enter("10.0.0.5")  # per address, even for a peer
    first.release()
    first.release()  # idempotent: a session may release on accept and again on close
    assert isinstance(gate.enter("192.0.2.3"), Ticket)
    assert gate.pending() == 4

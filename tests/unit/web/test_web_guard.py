"""The web's connection guard: caps, the descriptor share, and logging by aggregate (S1, S1b)."""

from __future__ import annotations

import logging

from appliance.web.guard import AcceptErrorFilter, ConnectionGuard, Limits, accept_burst, total_cap


def limits(**changes) -> Limits:
    values = dict(
        max_connections=4, max_connections_per_address=2, header_timeout_s=20, body_timeout_s=20, body_min_rate=500
    )
    values.update(changes)
    return Limits(**values)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_web_takes_at_most_a_quarter_of_the_open_files():
    assert total_cap(256, 1024) == 256
    assert total_cap(256, 256) == 64
    assert total_cap(256, 2) == 1


def test_the_accept_burst_is_half_the_cap_within_8_to_128():
    assert accept_burst(64) == 32
    assert accept_burst(2) == 8
    assert accept_burst(10_000) == 128


def test_caps_per_address_and_in_all_and_release():
    guard = ConnectionGuard(limits())
    assert guard.admit("10.0.0.1") and guard.admit("10.0.0.1")
    assert not guard.admit("10.0.0.1")  # per address
    assert guard.admit("10.0.0.2") and guard.admit("10.0.0.3")
    assert not guard.admit("10.0.0.4")  # in all
    assert guard.open_connections == 4
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.4")
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        guard.release(address)
    assert guard.open_connections == 0


def test_refusals_are_logged_by_aggregate_once_a_minute(caplog):
    clock = Clock()
    guard = ConnectionGuard(limits(max_connections_per_address=1), clock=clock)
    guard.admit("10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="appliance.web.guard"):
        for _ in range(1000):
            guard.admit("10.0.0.1")
            guard.note("header deadline")
        clock.now = 61.0
        guard.note("header deadline")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "web connections closed: 1 by the per-address connection cap",
        "web connections closed: 1001 by the header deadline, 999 by the per-address connection cap",
    ]


def test_accept_errors_pass_once_a_minute_with_the_count_held_back():
    clock = Clock()
    passes = AcceptErrorFilter(clock=clock)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, (OSError, OSError(24), None))

    first = record("socket.accept() out of system resource")
    assert passes.filter(first) and first.exc_info is None
    assert not any(passes.filter(record("socket.accept() out of system resource")) for _ in range(2047))
    assert passes.filter(record("something else asyncio says"))
    clock.now = 60.0
    later = record("socket.accept() out of system resource")
    assert passes.filter(later)
    assert later.getMessage() == "socket.accept() out of system resource (2047 more like it held back)"

"""The web server's guard against slow and piled-up connections (hostile case S1).

uvicorn on its own never times out a request whose header or body trickles in (its
keep-alive timer only runs between requests), and accepts as many connections as the
open-file limit allows: 1,100 trickling sockets held every descriptor of ``appliance
serve``, so the DICOM listener in the same process could accept nothing. Here, as
Apache's ``mod_reqtimeout`` does it:

- a request's header must be complete ``header_timeout_s`` after the connection (or the
  previous response) began, else the connection gets 408 and is closed;
- its body must keep coming: after ``body_timeout_s``, at least ``body_min_rate`` bytes a
  second on average, else the connection is closed (not while the app itself holds the
  reading back);
- at most ``max_connections_per_address`` connections from one address and
  ``max_connections`` in all are open; one more is answered 503 and closed at once.
  The total is also held to a quarter of the open-file limit, so the rest stays for the
  DICOM listener, the database and the worker under ``serve``.

Refusals and timeouts are logged by aggregate, at most one line a minute, never one
line (or traceback) per connection. asyncio's accept loop takes up to ``backlog``
connections in one go before any protocol sees them, and when the process runs out of
descriptors it logs a traceback for every remaining turn of that loop, each time (S1b:
222,541 of them in 30 s with uvicorn's backlog of 2048): the backlog is held to
:func:`accept_burst`, and :class:`AcceptErrorFilter` lets one such record a minute through.

The open-file limit itself is not raised: pynetdicom waits on its sockets with
``select()``, which cannot take a descriptor past 1023.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LOG = logging.getLogger(__name__)

#: Share of the open-file limit the web's connections may take at most.
DESCRIPTOR_SHARE = 4
_SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 5\r\ncontent-length: 0\r\n\r\n"
)
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """What one web server allows (from ``[web]``)."""

    max_connections: int
    max_connections_per_address: int
    header_timeout_s: float
    body_timeout_s: float
    body_min_rate: int


def open_file_limit() -> int:
    """The process's soft limit on open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def total_cap(configured: int, nofile: int) -> int:
    """Connections the web may hold: the configured cap, at most a quarter of ``nofile``
    (pure)."""
    return max(1, min(configured, nofile // DESCRIPTOR_SHARE))


def accept_burst(cap: int) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one turn
    (pure): half the connection cap, 8 to 128."""
    return max(8, min(128, cap // 2))


class AcceptErrorFilter(logging.Filter):
    """Lets one "socket.accept() out of system resource" record of the ``asyncio`` logger
    through every ``every_s``, with how many were held back since."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, clock: Callable[[], float] = time.monotonic, every_s: float = 60.0):
        super().__init__()
        self._clock = clock
        self._every_s = every_s
        self._passed_at: float | None = None
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        now = self._clock()
        if self._passed_at is not None and now - self._passed_at < self._every_s:
            self._held_back += 1
            return False
        self._passed_at = now
        record.msg = f"{self.MESSAGE} ({self._held_back} more like it held back)"
        record.exc_info = None
        self._held_back = 0
        return True


def quiet_accept_errors(logger: logging.Logger | None = None) -> AcceptErrorFilter:
    """Install (once) an :class:`AcceptErrorFilter` on the ``asyncio`` logger."""
    logger = logger or logging.getLogger("asyncio")
    for existing in logger.filters:
        if isinstance(existing, AcceptErrorFilter):
            return existing
    installed = AcceptErrorFilter()
    logger.addFilter(installed)
    return installed


class ConnectionGuard:
    """Counts open connections per address and in all, and logs what it turned away by
    aggregate. Used from the server's event loop; the counters are locked anyway so a
    test may read them from another thread."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic, log_every_s: float = 60.0):
        self.limits = limits
        self._clock = clock
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._held_back: Counter[str] = Counter()
        self._logged_at: float | None = None

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) when a cap is reached."""
        with self._lock:
            if self._open[address] >= self.limits.max_connections_per_address:
                reason = "per-address connection cap"
            elif sum(self._open.values()) >= self.limits.max_connections:
                reason = "connection cap"
            else:
                self._open[address] += 1
                return True
        self.note(reason)
        return False

    def release(self, address: str) -> None:
        with self._lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]

    def note(self, reason: str) -> None:
        """Count one connection turned away or cut for ``reason``; log the counts at most
        once every ``log_every_s``."""
        now = self._clock()
        with self._lock:
            self._held_back[reason] += 1
            if self._logged_at is not None and now - self._logged_at < self._log_every_s:
                return
            self._logged_at = now
            counts, self._held_back = dict(self._held_back), Counter()
        LOG.warning(
            "web connections closed: %s",
            ", ".join(f"{n} by the {reason}" for reason, n in sorted(counts.items())),
        )


def protocol_class(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with ``guard``'s caps and the header and body deadlines."""

    class GuardedH11Protocol(_GuardedH11Protocol):
        pass

    GuardedH11Protocol.guard = guard
    return GuardedH11Protocol


class _GuardedH11Protocol(H11Protocol):
    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        self._phase: str | None = None
        self._phase_started = 0.0
        self._phase_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        if not self.guard.admit(address):
            transport.write(_SERVICE_UNAVAILABLE)  # type: ignore[attr-defined]
            transport.close()
            return
        self._address = address
        super().connection_made(transport)  # type: ignore[arg-type]
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is None:  # turned away in connection_made: uvicorn never saw it
            return
        self.guard.release(self._address)
        self._address = None
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._phase_bytes += len(data)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a kept-alive connection waits for its next header

    def _follow(self) -> None:
        """Start the header or body clock when the request moves into that part, and stop
        it once the request is in."""
        state = self.conn.their_state
        phase = "header" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase, self._phase_started, self._phase_bytes = phase, self.loop.time(), 0
        if phase is not None:
            self._arm(self._due())

    def _due(self) -> float:
        limits = self.guard.limits
        if self._phase == "header":
            return self._phase_started + limits.header_timeout_s
        return self._phase_started + limits.body_timeout_s + self._phase_bytes / limits.body_min_rate

    def _arm(self, at: float) -> None:
        self._deadline = self.loop.call_at(at, self._check)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check(self) -> None:
        self._deadline = None
        if self._address is None or self.transport.is_closing():
            return
        due = self._due()
        if self._phase == "body" and self.flow.read_paused:  # the app holds the reading back
            self._phase_started, self._phase_bytes = self.loop.time(), 0
            due = self._due()
        if due > self.loop.time():
            self._arm(due)
            return
        self.guard.note(f"{self._phase} deadline")
        if self._phase == "header":
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()

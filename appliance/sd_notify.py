"""systemd readiness and watchdog notifications (``Type=notify``, ``WatchdogSec=``).

A no-op when the process was not started by systemd (``$NOTIFY_SOCKET`` unset). Sending
never blocks and never raises: a component must not stall or die because the service
manager is slow or gone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)

#: What a child process must not inherit: its notifications would speak for the parent.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify(state: str) -> bool:
    """Send one notification such as ``READY=1`` or ``WATCHDOG=1``; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        LOG.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def child_environment() -> dict[str, str]:
    """This process's environment without the notification variables (for a child)."""
    return {k: v for k, v in os.environ.items() if k not in NOTIFY_VARIABLES}


class Watchdog:
    """``WATCHDOG=1`` from a component's own progress: call :meth:`progressed` each time
    its loop advances; a ping goes out at most once per ``interval_s``. A loop that stops
    advancing stops the pings, and systemd restarts the service."""

    def __init__(
        self,
        interval_s: float | None,
        send: Callable[[str], object] = notify,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.interval_s = interval_s
        self._send = send
        self._clock = clock
        self._last: float | None = None

    @classmethod
    def from_environment(cls) -> Watchdog:
        return cls(watchdog_interval_s())

    def progressed(self) -> None:
        if self.interval_s is None:
            return
        now = self._clock()
        if self._last is None or now - self._last >= self.interval_s:
            self._send("WATCHDOG=1")
            self._last = now

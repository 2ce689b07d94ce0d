"""systemd readiness and watchdog notifications (``Type=notify``, ``WatchdogSec=``).

A no-op when the process was not started by systemd (``$NOTIFY_SOCKET`` unset).
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one notification such as ``READY=1`` or ``WATCHDOG=1``; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000

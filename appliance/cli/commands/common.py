"""What several commands share."""

from __future__ import annotations

import getpass
import signal
import threading


def actor() -> str:
    """Who is acting, for the audit log: the user running the command."""
    return f"cli:{getpass.getuser()}"


def until_signalled() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()

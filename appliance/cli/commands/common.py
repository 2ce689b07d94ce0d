"""What several commands share."""

from __future__ import annotations

import getpass
import signal
import threading
from collections.abc import Callable


def actor() -> str:
    """Who is acting, for the audit log: the user running the command."""
    return f"cli:{getpass.getuser()}"


def on_stop_signal(action: Callable[[], object]) -> None:
    """Run ``action`` on SIGTERM or SIGINT (in the main thread, between bytecodes)."""
    signal.signal(signal.SIGTERM, lambda *_: action())
    signal.signal(signal.SIGINT, lambda *_: action())


def stop_requested() -> threading.Event:
    """An event set by SIGTERM or SIGINT. Take it before starting anything: a signal that
    arrives during a slow start then stops the component instead of being lost."""
    stop = threading.Event()
    on_stop_signal(stop.set)
    return stop

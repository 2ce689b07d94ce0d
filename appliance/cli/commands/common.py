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


class StopRequest:
    """Set by SIGTERM or SIGINT, remembering which for the shutdown's log line. Take it
    before starting anything: a signal that arrives during a slow start then stops the
    component instead of being lost."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name = ""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self) -> str:
        """Block until signalled; the signal's name."""
        self._event.wait()
        return self.signal_name


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows under their headers, each column as wide as its widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

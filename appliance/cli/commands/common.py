"""What several commands share."""

from __future__ import annotations

import getpass
import signal
import threading


def actor() -> str:
    """Who is acting, for the audit log: the user running the command."""
    return f"cli:{getpass.getuser()}"


def until_signalled() -> str:
    """Wait for SIGTERM or SIGINT; return its name, for the shutdown's log line."""
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wait()
    return received[0]


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows under their headers, each column as wide as its widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

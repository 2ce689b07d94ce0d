"""How long the appliance was up to receive studies, for the compliance report.

The process that runs the DICOM listener (``appliance serve`` or ``appliance listener``)
records a span when it starts, moves the span's end every ``every_s`` while it runs and
once more, marked stopped, when it stops. Time that no span covers is downtime. A span
that was never marked stopped ended (a crash, a power cut) somewhere in the ``every_s``
after its last beat, so it counts as up to that beat plus ``every_s``: downtime is known
to within ``every_s``. The only writer of ``uptime_spans``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.db import transaction

LOG = logging.getLogger(__name__)

#: Seconds between beats: downtime is measured to within this.
EVERY_S = 60.0


class UptimeRecorder:
    """One process's span in ``uptime_spans``.

    Parameters
    ----------
    conn : sqlite3.Connection
        The appliance database, used from the recorder's thread only once started.
    component : str
        Which process this is (``serve``, ``listener``).
    clock : callable, optional
        POSIX seconds now (tests move it).
    every_s : float, optional
        Seconds between beats.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        component: str,
        clock: Callable[[], float] = time.time,
        every_s: float = EVERY_S,
    ):
        self.conn = conn
        self.component = component
        self.clock = clock
        self.every_s = every_s
        self.span_id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        now = self.clock()
        with transaction(self.conn) as conn:
            cursor = conn.execute(
                "INSERT INTO uptime_spans (component, pid, started_at, alive_at, every_s) VALUES (?,?,?,?,?)",
                (self.component, os.getpid(), now, now, self.every_s),
            )
        self.span_id = cursor.lastrowid

    def beat(self, stopped: bool = False) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE uptime_spans SET alive_at = ?, stopped = ? WHERE id = ?",
                (self.clock(), int(stopped), self.span_id),
            )

    def start(self) -> None:
        """Begin the span and beat from a thread until :meth:`stop`."""
        self.begin()
        self._thread = threading.Thread(target=self._run, name="uptime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the span: the last beat, marked stopped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.beat(stopped=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except sqlite3.Error as exc:  # a busy database misses one beat, not the span
                LOG.warning("uptime beat not recorded (%s); the next one will be", exc)


@dataclass(frozen=True)
class Span:
    started_at: float
    alive_at: float
    stopped: bool
    every_s: float

    @property
    def up_to(self) -> float:
        """The latest moment it may have been up: its last beat, or one interval after it
        when it never said it stopped."""
        return self.alive_at if self.stopped else self.alive_at + self.every_s


@dataclass(frozen=True)
class Availability:
    """Up and down time within the measured part of a period (pure data)."""

    measured_from: float | None  # the period's start, or the first span's when later; None: never up
    measured_to: float
    down_s: float
    #: Gaps of at least ``outage_s``, as (start, end).
    outages: tuple[tuple[float, float], ...]

    @property
    def measured_s(self) -> float:
        return 0.0 if self.measured_from is None else max(0.0, self.measured_to - self.measured_from)

    @property
    def share_up(self) -> float | None:
        return None if self.measured_s == 0 else 1 - self.down_s / self.measured_s


def spans(conn: sqlite3.Connection) -> list[Span]:
    """Every recorded span, oldest first."""
    rows = conn.execute("SELECT started_at, alive_at, stopped, every_s FROM uptime_spans ORDER BY started_at")
    return [Span(a, b, bool(c), d) for a, b, c, d in rows]


def availability(recorded: list[Span], t0: float, t1: float, now: float, outage_s: float = 300.0) -> Availability:
    """Downtime within ``[t0, t1)``, counted from the first span on (before it the box was
    not installed) and up to ``now`` (pure)."""
    end = min(t1, now)
    if not recorded or recorded[0].started_at >= end:
        return Availability(None, end, 0.0, ())
    start = max(t0, recorded[0].started_at)
    gaps, covered_to = [], start
    for span in sorted(recorded, key=lambda s: s.started_at):
        if span.started_at > covered_to:
            gaps.append((covered_to, min(span.started_at, end)))
        covered_to = max(covered_to, min(span.up_to, end))
        if covered_to >= end:
            break
    if covered_to < end:
        gaps.append((covered_to, end))
    gaps = [(a, b) for a, b in gaps if b > a]
    return Availability(
        start,
        end,
        sum(b - a for a, b in gaps),
        tuple((a, b) for a, b in gaps if b - a >= outage_s),
    )

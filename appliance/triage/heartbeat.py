"""Each running worker's heartbeat, the one writer of ``worker_heartbeats``.

A worker's loop beats as it advances: when idle at most every quarter of
``worker.heartbeat_s``, promising the next beat within ``heartbeat_s``; when it claims a
series, promising one within ``series_timeout_s + heartbeat_s``. A worker past its
promise is hung (stopped, deadlocked, stuck in the database): ``/readyz`` says so when
series are queued, naming it, and the supervisor of ``appliance serve`` kills it
:attr:`~appliance.config.WorkerSettings.hang_restart_s` later so that a new one starts.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import WorkerSettings
from appliance.db import transaction


@dataclass(frozen=True)
class Beat:
    """A worker's last heartbeat as stored."""

    name: str
    pid: int
    beat_at: float
    expect_by: float
    job_id: int | None

    def words(self, now: float) -> str:
        """The beat as the health check says it (pure)."""
        doing = f"on job {self.job_id}" if self.job_id is not None else "idle"
        return (
            f"worker {self.name} (pid {self.pid}) has not advanced for {now - self.beat_at:.0f} s "
            f"({doing} at its last beat, next beat was due {now - self.expect_by:.0f} s ago)"
        )


class Heartbeat:
    """The beats of one worker on its own connection.

    Parameters
    ----------
    clock : callable
        Wall-clock seconds (injected in tests); the stored times are wall-clock so other
        processes can compare them.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        settings: WorkerSettings,
        clock: Callable[[], float] = time.time,
    ):
        self.conn = conn
        self.name = name
        self.settings = settings
        self.clock = clock
        self._last: tuple[float, int | None] | None = None

    def beat(self, job_id: int | None = None) -> None:
        """Record that the loop advanced (on ``job_id``, or idle). An idle beat is written at
        most every quarter of ``heartbeat_s``; one that starts a job always."""
        now = self.clock()
        if self._last is not None and job_id is None and self._last[1] is None:
            if 0 <= now - self._last[0] < self.settings.heartbeat_s / 4:
                return
        within = self.settings.heartbeat_s + (self.settings.series_timeout_s if job_id is not None else 0.0)
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO worker_heartbeats (name, pid, beat_at, expect_by, job_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.name, os.getpid(), now, now + within, job_id),
            )
        self._last = (now, job_id)

    def end(self) -> None:
        """The worker stops: its heartbeat goes (a stopped worker is not a hung one)."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM worker_heartbeats WHERE name = ?", (self.name,))

    def forget(self, gone: Callable[[str], bool]) -> None:
        """Remove the heartbeats of workers ``gone`` says no longer run (dead incarnations)."""
        with transaction(self.conn):
            for (name,) in self.conn.execute("SELECT name FROM worker_heartbeats").fetchall():
                if name != self.name and gone(name):
                    self.conn.execute("DELETE FROM worker_heartbeats WHERE name = ?", (name,))


def beats(conn: sqlite3.Connection) -> list[Beat]:
    """Every worker's last beat, latest first (read only)."""
    rows = conn.execute(
        "SELECT name, pid, beat_at, expect_by, job_id FROM worker_heartbeats ORDER BY beat_at DESC"
    ).fetchall()
    return [Beat(*row) for row in rows]


def hung(conn: sqlite3.Connection, now: float, grace_s: float = 0.0) -> list[Beat]:
    """The workers whose promised beat is more than ``grace_s`` overdue (read only)."""
    return [beat for beat in beats(conn) if now > beat.expect_by + grace_s]


class ClockWatch:
    """Notices the wall clock stepping: between two looks, wall time moved more than
    ``threshold_s`` away from monotonic time (an NTP step, a hand-set clock, a VM resumed).

    The stored times (leases, retries, sessions) are wall-clock because they outlive the
    process; each reader tolerates a step, and the worker audits one (``clock-stepped``).
    """

    def __init__(
        self,
        threshold_s: float = 60.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.threshold_s = threshold_s
        self.wall, self.monotonic = wall, monotonic
        self._last = (wall(), monotonic())

    def stepped(self) -> float:
        """Seconds the wall clock stepped since the last look (negative: back), or 0.0."""
        wall, mono = self.wall(), self.monotonic()
        step = (wall - self._last[0]) - (mono - self._last[1])
        self._last = (wall, mono)
        return step if abs(step) > self.threshold_s else 0.0

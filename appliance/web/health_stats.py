"""Throughput and latency over recent windows, for the health page (reads only).

Every function takes ``now`` so the windows can be tested without waiting for them.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from appliance.states import IN_FLIGHT, ModelState

WINDOWS = (("last hour", 3600.0), ("last day", 86400.0))


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class Window:
    """What happened in the ``span_s`` seconds before ``now``; the rates are over
    ``covered_s``: the span, or less on a box whose first image is younger (at least an
    hour), so a box up for minutes does not spread its images over a whole day."""

    label: str
    span_s: float
    instances: int  # instances received
    analysed: int  # series the active model decided on
    to_result_p50: float | None
    to_result_p95: float | None
    covered_s: float

    @property
    def instances_per_hour(self) -> float:
        return self.instances * 3600.0 / self.covered_s

    @property
    def analysed_per_hour(self) -> float:
        return self.analysed * 3600.0 / self.covered_s


@dataclass(frozen=True)
class Pending:
    """The series that has waited longest for a result."""

    state: str
    modality: str
    waited_s: float


def window(conn: sqlite3.Connection, label: str, span_s: float, now: float) -> Window:
    """Ingest and inference counts and time-to-result quantiles over ``(now - span_s, now]``.

    Time to result runs from a series' last instance to its active model's result (as
    ``/metrics`` measures it).
    """
    since = now - span_s
    instances = conn.execute(
        "SELECT COUNT(*) FROM instances WHERE received_at > ? AND received_at <= ?", (since, now)
    ).fetchone()[0]
    to_result = [
        max(float(v), 0.0)
        for (v,) in conn.execute(
            "SELECT r.created_at - s.last_received_at FROM inference_results r JOIN series s "
            "ON s.series_instance_uid = r.series_instance_uid "
            "WHERE r.role = ? AND r.created_at > ? AND r.created_at <= ?",
            (ModelState.ACTIVE, since, now),
        )
    ]
    first = conn.execute("SELECT MIN(received_at) FROM instances").fetchone()[0]
    covered = span_s if first is None else min(span_s, max(now - first, 3600.0))
    return Window(
        label, span_s, instances, len(to_result), percentile(to_result, 0.5), percentile(to_result, 0.95), covered
    )


def windows(conn: sqlite3.Connection, now: float) -> list[Window]:
    """The last hour and the last day."""
    return [window(conn, label, span, now) for label, span in WINDOWS]


def oldest_pending(conn: sqlite3.Connection, now: float) -> Pending | None:
    """The series still receiving, queued or running that arrived first; None if none."""
    row = conn.execute(
        f"SELECT state, modality, first_received_at FROM series WHERE state IN ({','.join('?' * len(IN_FLIGHT))}) "
        "ORDER BY first_received_at LIMIT 1",
        tuple(IN_FLIGHT),
    ).fetchone()
    return None if row is None else Pending(row[0], row[1], max(now - row[2], 0.0))

"""Retention: received pixel data leaves the spool ``retention.pixel_days`` after its
series became final, once every result object for its study is delivered.

A series qualifies when it is triaged, not-eligible or failed, has not changed for
``pixel_days``, has no job waiting or running, and no outbox row of its study is pending
or dead (a dead letter is an undelivered result: its series is kept). Oldest first, at
most ``batch_series`` per run. The index rows (instances, series), the results, the
notices and the audit log stay; ``purged_series`` (this module is its one writer) says
which series' files are gone, and each run that deletes anything is audited.

Files are deleted before the series is recorded as purged, so a crash in between only
means the next run deletes what is left and records it then. A file written after the
cutoff (a late resend that replaced it) is kept.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.audit.chain import append_in
from appliance.config import RetentionSettings
from appliance.db import transaction
from appliance.states import JobState, OutboxState, SeriesState

LOG = logging.getLogger(__name__)
DAY_S = 86400.0


@dataclass(frozen=True)
class Purged:
    """What one run deleted."""

    series: int = 0
    files: int = 0
    bytes: int = 0


def due_series(conn: sqlite3.Connection, cutoff: float, limit: int) -> list[str]:
    """Series whose pixel data may go, oldest first (read only)."""
    rows = conn.execute(
        "SELECT s.series_instance_uid FROM series s WHERE s.state IN (?, ?, ?) AND s.updated_at <= ? "
        "AND NOT EXISTS (SELECT 1 FROM purged_series p WHERE p.series_instance_uid = s.series_instance_uid) "
        "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_instance_uid = s.series_instance_uid "
        "AND j.state IN (?, ?)) "
        "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.study_instance_uid = s.study_instance_uid "
        "AND o.state IN (?, ?)) "
        "ORDER BY s.updated_at LIMIT ?",
        (
            SeriesState.TRIAGED,
            SeriesState.NOT_ELIGIBLE,
            SeriesState.FAILED,
            cutoff,
            JobState.QUEUED,
            JobState.RUNNING,
            OutboxState.PENDING,
            OutboxState.DEAD,
            limit,
        ),
    )
    return [row[0] for row in rows]


def _delete(path: Path, cutoff: float) -> int:
    """Delete one spooled file written before ``cutoff``; return the bytes freed.
    Raises OSError when the file is there and cannot be deleted."""
    try:
        info = path.stat()
        if info.st_mtime > cutoff:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return info.st_size


def _remove_empty(folder: Path) -> None:
    """The series folder, then its study folder, if nothing else is in them."""
    for directory in (folder, folder.parent):
        try:
            directory.rmdir()
        except OSError:
            return


def purge(conn: sqlite3.Connection, settings: RetentionSettings, now: float) -> Purged:
    """Delete the pixel data of the series that are due; record and audit what went."""
    cutoff = now - settings.pixel_days * DAY_S
    done: list[tuple[str, int, int]] = []
    for series_uid in due_series(conn, cutoff, settings.batch_series):
        paths = [
            Path(row[0])
            for row in conn.execute("SELECT path FROM instances WHERE series_instance_uid = ?", (series_uid,))
        ]
        try:
            freed = [_delete(path, cutoff) for path in paths]
        except OSError as exc:  # left unrecorded: the next run tries again
            LOG.warning("retention: cannot delete the files of series %s: %s", series_uid, exc)
            continue
        for folder in {path.parent for path in paths}:
            _remove_empty(folder)
        done.append((series_uid, sum(1 for n in freed if n), sum(freed)))
    if not done:
        return Purged()
    purged = Purged(len(done), sum(d[1] for d in done), sum(d[2] for d in done))
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO purged_series (series_instance_uid, files, bytes, purged_at) VALUES (?, ?, ?, ?)",
            [(uid, files, size, now) for uid, files, size in done],
        )
        append_in(
            conn,
            "retention-purge",
            {"series": purged.series, "files": purged.files, "bytes": purged.bytes, "pixel_days": settings.pixel_days},
        )
    LOG.info("retention: deleted %d file(s), %d MiB, of %d series", purged.files, purged.bytes >> 20, purged.series)
    return purged

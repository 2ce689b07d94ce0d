"""The jobs table as a durable queue between the listener and the worker(s).

A worker claims the highest-priority, oldest job with a lease; a job whose lease ran out
(its worker died) can be claimed again, up to ``max_attempts``, after which it fails.
Finishing checks the lease is still ours in the same transaction that records the
result, so a job is never recorded (or audited) twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.db import transaction
from appliance.errors import LeaseLost


@dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: int
    series_instance_uid: str
    study_instance_uid: str
    generation: int
    attempts: int
    created_at: float


def claim(conn: sqlite3.Connection, owner: str, lease_s: float, max_attempts: int, now: float) -> Job | None:
    """Take the next job, or None. Jobs past ``max_attempts`` fail on the way."""
    with transaction(conn):
        while True:
            row = conn.execute(
                "SELECT id, series_instance_uid, study_instance_uid, generation, attempts, created_at "
                "FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_expires_at < ?) "
                "ORDER BY priority DESC, id LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            job = Job(*row)
            if job.attempts >= max_attempts:
                reason = f"abandoned after {job.attempts} attempts (worker stopped each time)"
                conn.execute("UPDATE jobs SET state = 'failed', reason = ?, updated_at = ? WHERE id = ?",
                             (reason, now, job.id))
                conn.execute("UPDATE series SET state = 'failed', reason = ?, updated_at = ? "
                             "WHERE series_instance_uid = ? AND generation = ?",
                             (reason, now, job.series_instance_uid, job.generation))
                continue
            conn.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (owner, now + lease_s, now, job.id))
            conn.execute(
                "UPDATE series SET state = 'running', updated_at = ? WHERE series_instance_uid = ? "
                "AND generation = ? AND state IN ('queued', 'running')",
                (now, job.series_instance_uid, job.generation))
            return Job(job.id, job.series_instance_uid, job.study_instance_uid, job.generation,
                       job.attempts + 1, job.created_at)


def complete(conn: sqlite3.Connection, job: Job, owner: str, state: str, reason: str | None, now: float) -> bool:
    """Mark a job done or failed inside the caller's transaction; False if the lease was lost."""
    cursor = conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, lease_expires_at = NULL, updated_at = ? "
        "WHERE id = ? AND lease_owner = ? AND state = 'running'",
        (state, reason, now, job.id, owner))
    return cursor.rowcount == 1

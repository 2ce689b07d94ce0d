"""The series state machine and the durable job queue between listener and worker.

This module is the only writer of the ``series`` and ``jobs`` tables. The listener calls
it while indexing instances and completing series; the worker calls it to claim jobs and
to record how each ended. Every function runs inside the caller's transaction (see
:func:`appliance.db.transaction`) unless it says otherwise, so a state change commits
together with whatever caused it (an instance row, a result, an audit row).

Series states
-------------
::

    (new) ------------------------------------------> receiving
    receiving --complete (quiet period, or release + grace)--> queued
    queued ----a worker claims its job-----------------> running
    running ---result recorded-------------------------> triaged | not-eligible | failed
    queued, running --job abandoned after max attempts--> failed
    any state --an instance arrives--------------------> receiving  (a late arrival)

Each completion bumps the series' ``generation``; a job belongs to one generation. A
result for an older generation, or for a series that reopened meanwhile, is recorded as
superseded and never changes the series.

Job states
----------
::

    queued --claim--> running --finish--> done | failed
    queued --its series reopened--> superseded
    running --lease expired (or its worker is known dead), claimed again--> running
    queued, running --past max attempts--> failed

Two records cross this module: :class:`InstanceArrived` (from the listener's index: an
instance is durable) and :class:`Job` (to the worker: a claimed job carries its series'
stored files and the :class:`SeriesFacts` routing looks at).

A worker claims the highest-priority, oldest job with a lease; a job whose lease ran out
(its worker died) can be claimed again. A restarted worker ends the leases of its own dead
incarnations at once (:func:`expire_leases_of`) instead of waiting for them to run out.
Finishing checks the lease is still ours in the same transaction that records the result,
so a job is never recorded twice. Any other change raises :class:`~appliance.errors.IllegalTransition`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import IllegalTransition, LeaseLost
from appliance.states import JobState, SeriesState

#: Allowed series transitions (``receiving`` is reachable from every state: a late arrival).
SERIES_TRANSITIONS: dict[SeriesState, frozenset[SeriesState]] = {
    SeriesState.RECEIVING: frozenset({SeriesState.QUEUED}),
    SeriesState.QUEUED: frozenset({SeriesState.RUNNING, SeriesState.FAILED, SeriesState.RECEIVING}),
    SeriesState.RUNNING: frozenset(
        {SeriesState.TRIAGED, SeriesState.NOT_ELIGIBLE, SeriesState.FAILED, SeriesState.RECEIVING}
    ),
    SeriesState.TRIAGED: frozenset({SeriesState.RECEIVING}),
    SeriesState.NOT_ELIGIBLE: frozenset({SeriesState.RECEIVING}),
    SeriesState.FAILED: frozenset({SeriesState.RECEIVING}),
}
#: How a finished job ends, by the series state it leads to.
JOB_OUTCOME = {
    SeriesState.TRIAGED: JobState.DONE,
    SeriesState.NOT_ELIGIBLE: JobState.DONE,
    SeriesState.FAILED: JobState.FAILED,
}


@dataclass(frozen=True)
class InstanceArrived:
    """An instance the listener stored durably: what the index records and the series
    state machine hears (``series_instance_uid`` empty: stored, never triaged)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    body_part: str
    series_description: str
    transfer_syntax_uid: str  # as negotiated: the series is decoded only under it
    size_bytes: int
    sha256: str
    path: Path
    calling_ae: str
    association_id: str


@dataclass(frozen=True)
class SeriesFacts:
    """What routing looks at: the series as the listener indexed it; the Image Type is
    only in the files, read by the worker."""

    modality: str
    body_part: str = ""
    sop_class_uid: str = ""
    series_description: str = ""
    image_type: tuple[str, ...] = ()
    instances: int = 1
    calling_ae: str = ""


@dataclass(frozen=True)
class StoredFile:
    """One stored instance of a series."""

    path: Path
    transfer_syntax_uid: str
    sha256: str = ""  # as indexed: a replaced instance has other bytes


@dataclass(frozen=True)
class Job:
    """A job a worker claimed: one generation of a series, with its stored files (in
    arrival order) and facts, leased to ``owner``."""

    id: int
    series_instance_uid: str
    study_instance_uid: str
    generation: int
    attempts: int
    created_at: float
    owner: str
    files: tuple[StoredFile, ...]
    facts: SeriesFacts


@dataclass(frozen=True)
class Triaged:
    """What a triaged series shows: the active model's flag and score."""

    flag: bool
    score: float
    model: str  # "id version"


def check_series_transition(current: SeriesState, new: SeriesState) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> new`` is allowed (pure)."""
    if new not in SERIES_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"series cannot go from '{current}' to '{new}'")


# Listener side --------------------------------------------------------------------------
def instance_arrived(conn: sqlite3.Connection, arrival: InstanceArrived, added: int, now: float) -> None:
    """An instance of this series was stored (``added`` new instances: 0 or 1).

    Creates the series or reopens it (``receiving``), and supersedes the job still
    waiting for the earlier generation: completion queues a new one.
    """
    conn.execute(
        "INSERT INTO series (series_instance_uid, study_instance_uid, modality, body_part, "
        "series_description, calling_ae, instances, state, first_received_at, "
        "last_received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (series_instance_uid) DO UPDATE SET "
        "instances = instances + excluded.instances, last_received_at = excluded.last_received_at, "
        "updated_at = excluded.updated_at, released_at = NULL, state = excluded.state, reason = NULL",
        (
            arrival.series_instance_uid,
            arrival.study_instance_uid,
            arrival.modality,
            arrival.body_part,
            arrival.series_description,
            arrival.calling_ae,
            added,
            SeriesState.RECEIVING,
            now,
            now,
            now,
        ),
    )
    conn.execute(
        "UPDATE jobs SET state = ?, reason = 'new instances arrived', updated_at = ? "
        "WHERE series_instance_uid = ? AND state = ?",
        (JobState.SUPERSEDED, now, arrival.series_instance_uid, JobState.QUEUED),
    )


def mark_released(conn: sqlite3.Connection, series_uids: Iterable[str], now: float) -> None:
    """The association that carried these series was released normally."""
    conn.executemany(
        "UPDATE series SET released_at = ? WHERE series_instance_uid = ? AND state = ?",
        [(now, uid, SeriesState.RECEIVING) for uid in series_uids],
    )


def queue_complete_series(
    conn: sqlite3.Connection,
    quiet_period_s: float,
    release_grace_s: float | Callable[[str], float],
    still_sending: set[str],
    now: float,
    priority: Callable[[SeriesFacts], int],
) -> list[str]:
    """Queue a job for every series that has finished arriving.

    A series is complete when nothing arrived for ``quiet_period_s``, or when the
    association that carried it was released ``release_grace_s`` ago (a number, or a
    function of the series' calling AE) and no other open association is still sending
    to it. ``priority(facts)`` (its modality and calling AE) gives the job's priority
    (higher is taken first).

    Returns
    -------
    list of str
        The series instance UIDs queued by this call.
    """
    grace = release_grace_s if callable(release_grace_s) else lambda calling_ae: float(release_grace_s)
    # A time after ``now`` was written before the wall clock stepped back: count the wait
    # from now, so a series received before the step waits its quiet period or grace, not
    # the length of the step.
    conn.execute(
        "UPDATE series SET last_received_at = MIN(last_received_at, ?), released_at = MIN(released_at, ?) "
        "WHERE state = ? AND (last_received_at > ? OR released_at > ?)",
        (now, now, SeriesState.RECEIVING, now, now),
    )
    rows = conn.execute(
        "SELECT series_instance_uid, last_received_at, released_at, modality, calling_ae FROM series "
        "WHERE state = ? AND (last_received_at <= ? OR released_at IS NOT NULL)",
        (SeriesState.RECEIVING, now - quiet_period_s),
    ).fetchall()
    queued = []
    for series_uid, last_received_at, released_at, modality, calling_ae in rows:
        quiet = last_received_at <= now - quiet_period_s
        released = released_at is not None and released_at <= now - grace(calling_ae)
        if not quiet and (not released or series_uid in still_sending):
            continue
        conn.execute(
            "UPDATE series SET state = ?, generation = generation + 1, updated_at = ? WHERE series_instance_uid = ?",
            (SeriesState.QUEUED, now, series_uid),
        )
        conn.execute(
            "INSERT INTO jobs (series_instance_uid, study_instance_uid, generation, state, "
            "priority, created_at, updated_at) SELECT series_instance_uid, study_instance_uid, "
            "generation, ?, ?, ?, ? FROM series WHERE series_instance_uid = ?",
            (JobState.QUEUED, priority(SeriesFacts(modality, calling_ae=calling_ae)), now, now, series_uid),
        )
        queued.append(series_uid)
    return queued


# Worker side ----------------------------------------------------------------------------
def claim(
    conn: sqlite3.Connection,
    owner: str,
    lease_s: float,
    max_attempts: int,
    now: float,
    abandoned: list[Job] | None = None,
) -> Job | None:
    """Take the next job with a lease, or None. A lease that ends more than ``lease_s``
    from ``now`` was given before the wall clock stepped back: it counts as expired, so a
    dead worker's series does not wait out the step. Jobs past ``max_attempts`` fail on the way
    (appended to ``abandoned`` when given, so the caller can tell PACS; only those whose
    series took the failure).

    Runs in the caller's ``BEGIN IMMEDIATE`` transaction.
    """
    while True:
        row = conn.execute(
            "SELECT id, series_instance_uid, study_instance_uid, generation, attempts, created_at "
            f"FROM jobs WHERE {_CLAIMABLE} ORDER BY priority DESC, id LIMIT 1",
            _claimable_values(now, lease_s),
        ).fetchone()
        if row is None:
            return None
        attempts = row[4]
        if attempts >= max_attempts:
            reason = abandoned_reason(attempts)
            conn.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                (JobState.FAILED, reason, now, row[0]),
            )
            job = _job(conn, row, "", attempts)
            if _set_series_state(conn, job, SeriesState.FAILED, reason, now) and abandoned is not None:
                abandoned.append(job)
            continue
        conn.execute(
            "UPDATE jobs SET state = ?, lease_owner = ?, lease_expires_at = ?, "
            "attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (JobState.RUNNING, owner, now + lease_s, now, row[0]),
        )
        job = _job(conn, row, owner, attempts + 1)
        _set_series_state(conn, job, SeriesState.RUNNING, None, now)
        return job


def claimable(conn: sqlite3.Connection, now: float, lease_s: float) -> bool:
    """Whether :func:`claim` would find a job (queued, or its lease run out or given before
    the clock stepped back): a plain read, so an idle worker's loop does not take the write
    lock the listener needs."""
    return (
        conn.execute(f"SELECT 1 FROM jobs WHERE {_CLAIMABLE} LIMIT 1", _claimable_values(now, lease_s)).fetchone()
        is not None
    )


#: The jobs :func:`claim` may take (one condition for it and :func:`claimable`): queued, or
#: running with a lease that ran out or that ends further ahead than a lease lasts (given
#: before the wall clock stepped back).
_CLAIMABLE = "state = ? OR (state = ? AND (lease_expires_at <= ? OR lease_expires_at > ?))"


def _claimable_values(now: float, lease_s: float) -> tuple:
    return JobState.QUEUED, JobState.RUNNING, now, now + lease_s


def abandoned_reason(attempts: int) -> str:
    """Why a job given up by :func:`claim` failed (pure)."""
    return f"abandoned after {attempts} attempts (worker stopped each time)"


def _job(conn: sqlite3.Connection, row: tuple, owner: str, attempts: int) -> Job:
    """The job of a ``jobs`` row, with its series' stored files and indexed facts."""
    job_id, series_uid, study_uid, generation, _, created_at = row
    files, facts = series_files(conn, series_uid)
    return Job(job_id, series_uid, study_uid, generation, attempts, created_at, owner, files, facts)


def series_files(conn: sqlite3.Connection, series_uid: str) -> tuple[tuple[StoredFile, ...], SeriesFacts]:
    """A series' stored files (in arrival order) and the facts the index keeps for it."""
    stored = conn.execute(
        "SELECT path, transfer_syntax_uid, sop_class_uid, sha256 FROM instances WHERE series_instance_uid = ? "
        "ORDER BY received_at",
        (series_uid,),
    ).fetchall()
    modality, body_part, description, calling_ae = conn.execute(
        "SELECT modality, body_part, series_description, calling_ae FROM series WHERE series_instance_uid = ?",
        (series_uid,),
    ).fetchone()
    facts = SeriesFacts(
        modality=modality,
        body_part=body_part,
        sop_class_uid=stored[0][2] if stored else "",
        series_description=description,
        instances=len(stored),
        calling_ae=calling_ae,
    )
    return tuple(StoredFile(Path(path), syntax, sha) for path, syntax, _, sha in stored), facts


def arriving(conn: sqlite3.Connection) -> list[str]:
    """The series still arriving or waiting for a worker (``receiving``, ``queued``),
    oldest activity first: what the worker prepares ahead of their jobs."""
    rows = conn.execute(
        "SELECT series_instance_uid FROM series WHERE state IN (?, ?) ORDER BY last_received_at",
        (SeriesState.RECEIVING, SeriesState.QUEUED),
    )
    return [uid for (uid,) in rows]


def expire_leases_of(conn: sqlite3.Connection, is_dead: Callable[[str], bool], now: float) -> list[int]:
    """End now the leases of running jobs whose owner ``is_dead(owner)``; returns their ids.

    A claim then takes them at once (and counts the attempt), rather than after the lease.
    """
    dead = [
        job_id
        for job_id, owner in conn.execute(
            "SELECT id, lease_owner FROM jobs WHERE state = ? AND lease_expires_at > ?", (JobState.RUNNING, now)
        )
        if owner and is_dead(owner)
    ]
    conn.executemany(
        "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ?", [(now, now, job_id) for job_id in dead]
    )
    return dead


def finish(
    conn: sqlite3.Connection,
    job: Job,
    series_state: SeriesState,
    reason: str | None,
    now: float,
    triaged: Triaged | None = None,
) -> bool:
    """End a claimed job and, if its series still waits for it, set the series' state.

    Runs in the caller's transaction, which also records the result.

    Parameters
    ----------
    series_state : SeriesState
        ``TRIAGED`` (with ``triaged``), ``NOT_ELIGIBLE`` or ``FAILED`` (with ``reason``).

    Returns
    -------
    bool
        True when the series took the outcome; False when the result is superseded (the
        series reopened or moved to a newer generation meanwhile).

    Raises
    ------
    LeaseLost
        The lease ran out and another worker took the job: record nothing.
    """
    if series_state not in JOB_OUTCOME or (series_state == SeriesState.TRIAGED) != (triaged is not None):
        raise IllegalTransition(f"a job cannot finish with series state '{series_state}'")
    cursor = conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, lease_expires_at = NULL, updated_at = ? "
        "WHERE id = ? AND lease_owner = ? AND state = ?",
        (JOB_OUTCOME[series_state], reason, now, job.id, job.owner, JobState.RUNNING),
    )
    if cursor.rowcount != 1:
        raise LeaseLost(f"job {job.id}")
    return _set_series_state(conn, job, series_state, reason, now, triaged)


def _set_series_state(
    conn: sqlite3.Connection,
    job: Job,
    new: SeriesState,
    reason: str | None,
    now: float,
    triaged: Triaged | None = None,
) -> bool:
    """Move the job's series to ``new`` if it is still at the job's generation; the one
    place a worker changes ``series.state``. False when the series has moved on."""
    row = conn.execute(
        "SELECT state, generation FROM series WHERE series_instance_uid = ?", (job.series_instance_uid,)
    ).fetchone()
    if row is None:
        raise IllegalTransition(f"job {job.id}: series {job.series_instance_uid} does not exist")
    current, generation = SeriesState(row[0]), row[1]
    if generation != job.generation or current == SeriesState.RECEIVING:
        return False  # a late arrival reopened the series: this job's outcome is superseded
    if current == new:
        return True  # claimed again after a lease ran out: still running
    check_series_transition(current, new)
    flag, score, model = (int(triaged.flag), triaged.score, triaged.model) if triaged else (None, None, None)
    if new == SeriesState.RUNNING:
        conn.execute(
            "UPDATE series SET state = ?, updated_at = ? WHERE series_instance_uid = ?",
            (new, now, job.series_instance_uid),
        )
    else:
        conn.execute(
            "UPDATE series SET state = ?, reason = ?, flag = ?, score = ?, model = ?, updated_at = ? "
            "WHERE series_instance_uid = ?",
            (new, reason, flag, score, model, now, job.series_instance_uid),
        )
    return True

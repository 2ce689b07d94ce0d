"""The result and notice rows: the one writer of ``inference_results`` and ``notices``.

Every function runs in the caller's transaction (the one that ends the job), so a
result row commits with its job's end, its audit row and its outbox rows.
"""

from __future__ import annotations

import sqlite3

from appliance.jobs import Job
from appliance.outcome.decision import Run, Verdict
from appliance.states import ModelState


def insert_result(
    conn: sqlite3.Connection,
    job: Job,
    role: ModelState,
    run: Run,
    verdict: Verdict,
    superseded: bool,
    audit_seq: int,
    now: float,
    sr_instance_uid: str | None = None,
    sc_instance_uid: str | None = None,
) -> None:
    """One model's result on one job (``role``: the state of the model that ran: active or shadow)."""
    conn.execute(
        "INSERT OR IGNORE INTO inference_results (job_id, role, series_instance_uid, study_instance_uid, "
        "generation, model_id, model_version, score, threshold, flag, superseded, audit_seq, "
        "sr_instance_uid, sc_instance_uid, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job.id,
            role,
            job.series_instance_uid,
            job.study_instance_uid,
            job.generation,
            run.model.id,
            run.model.version,
            verdict.score,
            verdict.threshold,
            int(verdict.flag),
            int(superseded),
            audit_seq,
            sr_instance_uid,
            sc_instance_uid,
            now,
        ),
    )


def supersede_earlier(conn: sqlite3.Connection, job: Job, by_sr_instance_uid: str) -> None:
    """Mark the series' current results from earlier generations replaced by this SR."""
    conn.execute(
        "UPDATE inference_results SET superseded = 1, superseded_by_sr = ? WHERE series_instance_uid = ? "
        "AND role = ? AND superseded = 0 AND generation < ?",
        (by_sr_instance_uid, job.series_instance_uid, ModelState.ACTIVE, job.generation),
    )


def current_result_sr(conn: sqlite3.Connection, series_uid: str, generation: int) -> tuple[str, str] | None:
    """The (study UID, SR instance UID) of the series' current result from an earlier
    generation, which a new result replaces; None when there is none."""
    return conn.execute(
        "SELECT study_instance_uid, sr_instance_uid FROM inference_results WHERE series_instance_uid = ? "
        "AND role = ? AND superseded = 0 AND generation < ? AND sr_instance_uid IS NOT NULL "
        "ORDER BY generation DESC LIMIT 1",
        (series_uid, ModelState.ACTIVE, generation),
    ).fetchone()


def insert_notice(
    conn: sqlite3.Connection, job: Job, reason_code: str, reason: str, sr_instance_uid: str, audit_seq: int, now: float
) -> None:
    """The "not analysed" notice sent for a job's series."""
    conn.execute(
        "INSERT OR IGNORE INTO notices (job_id, series_instance_uid, study_instance_uid, generation, "
        "reason_code, reason, sr_instance_uid, audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            job.id,
            job.series_instance_uid,
            job.study_instance_uid,
            job.generation,
            reason_code,
            reason,
            sr_instance_uid,
            audit_seq,
            now,
        ),
    )

"""Recording how a job ended: the one writer of ``inference_results`` and ``notices``.

Each function is one transaction that commits together: the job's end and its series'
state (through :mod:`appliance.jobs`, which checks the lease is still ours), the
hash-chained audit row, the inference row (or the notice row) and, for a current
outcome, the outbox rows that send the result objects (or the "not analysed" notice)
to every destination. A current result marks the series' earlier results superseded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from appliance import jobs
from appliance.audit import chain as audit_log
from appliance.config import Destination, DriftSettings
from appliance.db import transaction
from appliance.drift.service import record_series
from appliance.jobs import Job
from appliance.models.backends import Runtime
from appliance.models.registry import InstalledModel
from appliance.send.outbox import enqueue_in
from appliance.states import ModelState, SeriesState
from appliance.triage.pipeline import SeriesResult


@dataclass(frozen=True)
class Ran:
    """Which model ran, on what, and what it decided."""

    model: InstalledModel
    runtime: Runtime
    result: SeriesResult


def _model_fields(ran: Ran) -> dict:
    return {
        "model_id": ran.model.id,
        "model_version": ran.model.version,
        "model_sha256": ran.model.package_sha256,
        "backend": ran.runtime.target.label,
        "precision": ran.runtime.precision,
        "input_sha256": ran.result.input_sha256,
    }


def _insert_result(
    conn: sqlite3.Connection,
    job: Job,
    role: ModelState,
    ran: Ran,
    superseded: bool,
    seq: int,
    objects: list[tuple[Path, Dataset]],
    now: float,
) -> None:
    sr, sc = (str(objects[0][1].SOPInstanceUID), str(objects[1][1].SOPInstanceUID)) if objects else (None, None)
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
            ran.model.id,
            ran.model.version,
            ran.result.score,
            ran.result.threshold,
            int(ran.result.flag),
            int(superseded),
            seq,
            sr,
            sc,
            now,
        ),
    )


def triaged(
    conn: sqlite3.Connection,
    job: Job,
    owner: str,
    ran: Ran,
    timings: dict,
    objects: list[tuple[Path, Dataset]],
    destinations: Sequence[Destination],
    now: float,
    drift: DriftSettings | None = None,
    drift_features: dict | None = None,
) -> bool:
    """The active model's result; False when it is superseded (recorded, never sent).
    With ``drift``, the series' drift features are recorded in the same transaction.

    Raises
    ------
    LeaseLost
        Another worker has the job; nothing was recorded.
    """
    result = ran.result
    sr, sc = objects[0][1], objects[1][1]
    with transaction(conn):
        current = jobs.finish(
            conn,
            job,
            owner,
            SeriesState.TRIAGED,
            None,
            now,
            jobs.Triaged(bool(result.flag), result.score, ran.model.label),
        )
        seq = audit_log.append_in(
            conn,
            "inference",
            {
                "role": ModelState.ACTIVE,
                "job_id": job.id,
                "study_instance_uid": job.study_instance_uid,
                "series_instance_uid": job.series_instance_uid,
                "generation": job.generation,
                **_model_fields(ran),
                "images": int(len(result.image_scores)),
                "score": round(result.score, 6),
                "threshold": result.threshold,
                "flag": bool(result.flag),
                "latency": timings,
                "sr_instance_uid": str(sr.SOPInstanceUID),
                "sc_instance_uid": str(sc.SOPInstanceUID),
                "superseded": not current,
            },
        )
        if current:
            conn.execute(
                "UPDATE inference_results SET superseded = 1, superseded_by_sr = ? WHERE series_instance_uid = ? "
                "AND role = ? AND superseded = 0 AND generation < ?",
                (str(sr.SOPInstanceUID), job.series_instance_uid, ModelState.ACTIVE, job.generation),
            )
        _insert_result(conn, job, ModelState.ACTIVE, ran, not current, seq, objects, now)
        if current:
            for path, ds in objects:
                enqueue_in(
                    conn,
                    path,
                    str(ds.SOPClassUID),
                    str(ds.SOPInstanceUID),
                    job.study_instance_uid,
                    destinations,
                    now,
                    alert=bool(result.flag),
                )
        if drift is not None and drift_features is not None:
            record_series(
                conn,
                drift,
                job_id=job.id,
                model_id=ran.model.id,
                model_version=ran.model.version,
                features=drift_features,
                score=result.score,
                flag=bool(result.flag),
                now=now,
            )
    return current


def current_result_sr(conn: sqlite3.Connection, series_uid: str, generation: int) -> tuple[str, str] | None:
    """The (study UID, SR instance UID) of the series' current result from an earlier
    generation, which a new result replaces; None when there is none."""
    return conn.execute(
        "SELECT study_instance_uid, sr_instance_uid FROM inference_results WHERE series_instance_uid = ? "
        "AND role = ? AND superseded = 0 AND generation < ? AND sr_instance_uid IS NOT NULL "
        "ORDER BY generation DESC LIMIT 1",
        (series_uid, ModelState.ACTIVE, generation),
    ).fetchone()


def ended(
    conn: sqlite3.Connection,
    job: Job,
    owner: str,
    series_state: SeriesState,
    reason: str,
    now: float,
    drift: DriftSettings | None = None,
    model: InstalledModel | None = None,
    notice: tuple[str, Path, Dataset] | None = None,
    destinations: Sequence[Destination] = (),
) -> bool:
    """A job that ended without a result: ``not-eligible`` or ``failed``, with the reason.
    With ``drift`` and the ``model`` it was routed to, the failure counts as not analysed
    (by reason code) in that model's drift figures.

    Parameters
    ----------
    notice : (reason code, path, dataset), optional
        The "not analysed" notice written for a series a routing rule claimed; when the
        outcome is current it is recorded and queued for every destination.

    Returns
    -------
    bool
        False when the outcome is superseded (the series moved on; nothing is sent).

    Raises
    ------
    LeaseLost
        Another worker has the job; nothing was recorded.
    """
    with transaction(conn):
        current = jobs.finish(conn, job, owner, series_state, reason, now)
        payload = {"job_id": job.id, "series_instance_uid": job.series_instance_uid, "reason": reason}
        if notice is not None:
            payload.update(
                notice_reason_code=notice[0], notice_sr_instance_uid=str(notice[2].SOPInstanceUID), notice_sent=current
            )
        seq = audit_log.append_in(conn, f"series-{series_state}", payload)
        if drift is not None and model is not None:
            record_series(
                conn,
                drift,
                job_id=job.id,
                model_id=model.id,
                model_version=model.version,
                features=None,
                failure=reason,
                now=now,
            )
        if notice is not None and current:
            code, path, ds = notice
            conn.execute(
                "INSERT OR IGNORE INTO notices (job_id, series_instance_uid, study_instance_uid, generation, "
                "reason_code, reason, sr_instance_uid, audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.series_instance_uid,
                    job.study_instance_uid,
                    job.generation,
                    code,
                    reason,
                    str(ds.SOPInstanceUID),
                    seq,
                    now,
                ),
            )
            enqueue_in(
                conn, path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), job.study_instance_uid, destinations, now
            )
    return current


def abandoned_notice(
    conn: sqlite3.Connection,
    job: Job,
    notice: tuple[str, Path, Dataset],
    destinations: Sequence[Destination],
    now: float,
) -> bool:
    """The notice of a job :func:`appliance.jobs.claim` abandoned (its worker stopped on every
    attempt): recorded and queued if the series still shows that failure; False if it moved on."""
    code, path, ds = notice
    with transaction(conn):
        row = conn.execute(
            "SELECT state, generation, reason FROM series WHERE series_instance_uid = ?", (job.series_instance_uid,)
        ).fetchone()
        if row is None or row[:2] != (SeriesState.FAILED, job.generation):
            return False
        seq = audit_log.append_in(
            conn,
            "series-failed-notice",
            {
                "job_id": job.id,
                "series_instance_uid": job.series_instance_uid,
                "reason": row[2],
                "notice_reason_code": code,
                "notice_sr_instance_uid": str(ds.SOPInstanceUID),
            },
        )
        conn.execute(
            "INSERT OR IGNORE INTO notices (job_id, series_instance_uid, study_instance_uid, generation, "
            "reason_code, reason, sr_instance_uid, audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                job.id,
                job.series_instance_uid,
                job.study_instance_uid,
                job.generation,
                code,
                row[2],
                str(ds.SOPInstanceUID),
                seq,
                now,
            ),
        )
        enqueue_in(conn, path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), job.study_instance_uid, destinations, now)
    return True


def shadow(
    conn: sqlite3.Connection,
    job: Job,
    model: InstalledModel,
    runtime: Runtime,
    result: SeriesResult | None,
    error: str | None,
    active: SeriesResult,
    now: float,
) -> None:
    """A shadow model's result on the same inputs: audited and compared, never sent or shown."""
    if result is None:
        outcome: dict = {"error": error}
    else:
        outcome = {
            "score": round(result.score, 6),
            "threshold": result.threshold,
            "flag": bool(result.flag),
            "agrees": bool(result.flag) == bool(active.flag),
            "score_difference": round(result.score - active.score, 6),
        }
    with transaction(conn):
        seq = audit_log.append_in(
            conn,
            "inference",
            {
                "role": ModelState.SHADOW,
                "job_id": job.id,
                "series_instance_uid": job.series_instance_uid,
                "study_instance_uid": job.study_instance_uid,
                "model_id": model.id,
                "model_version": model.version,
                "model_sha256": model.package_sha256,
                "backend": runtime.target.label,
                "precision": runtime.precision,
                "input_sha256": active.input_sha256,
                **outcome,
            },
        )
        if result is not None:
            _insert_result(conn, job, ModelState.SHADOW, Ran(model, runtime, result), False, seq, [], now)

"""The outcome stage: record a decision, and queue what leaves the box because of it.

:meth:`Recorder.record` first builds the result objects (or the "not analysed" notice),
then commits in one transaction: the job's end and its series' state
(:func:`appliance.jobs.finish`, which checks the lease is still ours), the hash-chained
audit row, the result or notice row (:mod:`appliance.outcome.results`), the outbox rows
that send the objects to every destination, and the series' drift row. A result for a
series that has moved on (a late instance reopened it) is recorded as superseded and
never sent. A shadow model's run is recorded after the active one's, audited and
compared, never shown or sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from appliance import jobs, report
from appliance.audit import chain as audit_log
from appliance.config import Destination
from appliance.db import transaction
from appliance.drift.service import record_series
from appliance.errors import ApplianceError, internal_error
from appliance.outcome import results
from appliance.outcome.decision import Decision, Run
from appliance.outcome.objects import ObjectWriter
from appliance.send.outbox import OutgoingObject, enqueue_in
from appliance.states import ModelState, SeriesState

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the outcome stage did with a decision: the state the series took, whether it
    took it (False: superseded, nothing sent), and the objects queued for sending."""

    state: SeriesState
    current: bool
    queued: tuple[OutgoingObject, ...] = ()


class Recorder:
    """Records decisions on one database connection.

    Parameters
    ----------
    destinations : sequence of Destination
        Where the objects go (``settings.dicom.destinations``).
    clock : callable, optional
        Wall-clock seconds; tests pass their own.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        writer: ObjectWriter,
        destinations: Sequence[Destination],
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.writer = writer
        self.destinations = destinations
        self.clock = clock

    def record(self, decision: Decision) -> Outcome:
        """Record how a claimed job ended.

        Raises
        ------
        LeaseLost
            Another worker has the job; nothing was recorded.
        """
        if decision.state == SeriesState.TRIAGED:
            return self._triaged(decision)
        return self._ended(decision)

    def record_shadow(self, decision: Decision, run: Run) -> None:
        """A shadow model's run on the same inputs as the active one's (which ``decision``
        holds): audited and compared, never sent or shown."""
        job, active = decision.job, decision.run.verdict if decision.run else None
        if active is None:
            raise ValueError("a shadow run is compared with a triaged decision")
        if run.verdict is None:
            compared: dict[str, Any] = {"error": run.error}
        else:
            compared = {
                "score": round(run.verdict.score, 6),
                "threshold": run.verdict.threshold,
                "flag": bool(run.verdict.flag),
                "agrees": bool(run.verdict.flag) == bool(active.flag),
                "score_difference": round(run.verdict.score - active.score, 6),
            }
        conn, now = self.db.conn, self.clock()
        with transaction(conn):
            seq = audit_log.append_in(
                conn,
                "inference",
                {
                    "role": ModelState.SHADOW,
                    "job_id": job.id,
                    "series_instance_uid": job.series_instance_uid,
                    "study_instance_uid": job.study_instance_uid,
                    **_model_fields(run),
                    "input_sha256": active.input_sha256,
                    **compared,
                },
            )
            if run.verdict is not None:
                results.insert_result(conn, job, ModelState.SHADOW, run, run.verdict, False, seq, now)

    def record_abandoned(self, decision: Decision) -> Outcome:
        """The notice of a job :func:`appliance.jobs.claim` gave up on (its worker stopped
        on every attempt; the series already failed): recorded and queued if the series
        still shows that failure."""
        job = decision.job
        notice = self.writer.notice(decision, self.clock())
        if notice is None:
            return Outcome(SeriesState.FAILED, False)
        conn, now = self.db.conn, self.clock()
        with transaction(conn):
            row = conn.execute(
                "SELECT state, generation, reason FROM series WHERE series_instance_uid = ?",
                (job.series_instance_uid,),
            ).fetchone()
            if row is None or row[:2] != (SeriesState.FAILED, job.generation):
                return Outcome(SeriesState.FAILED, False)
            code = decision.notice.value if decision.notice else ""
            seq = audit_log.append_in(
                conn,
                "series-failed-notice",
                {
                    "job_id": job.id,
                    "series_instance_uid": job.series_instance_uid,
                    "reason": row[2],
                    "notice_reason_code": code,
                    "notice_sr_instance_uid": notice.sop_instance_uid,
                },
            )
            results.insert_notice(conn, job, code, row[2], notice.sop_instance_uid, seq, now)
            enqueue_in(conn, notice, self.destinations, now)
        return Outcome(SeriesState.FAILED, True, (notice,))

    # One job ----------------------------------------------------------------------------
    def _triaged(self, decision: Decision) -> Outcome:
        job, run, inputs = decision.job, decision.run, decision.inputs
        if run is None or run.verdict is None or inputs is None:
            raise ValueError("a triaged decision holds the active model's run and the series' inputs")
        started = time.time()
        try:
            objects = self.writer.result_objects(self.db.conn, decision, self.clock())
        except ApplianceError as exc:  # no coded finding: said as the reason
            return self._ended(_failed(decision, str(exc)))
        except Exception as exc:
            LOG.exception("job %d: the result objects could not be built", decision.job.id)
            return self._ended(_failed(decision, internal_error(exc)))
        verdict, (sr, sc) = run.verdict, objects
        timings = {
            **decision.timings,
            "output_s": round(decision.timings.get("output_s", 0.0) + time.time() - started, 4),
        }
        conn, now = self.db.conn, self.clock()
        with transaction(conn):
            current = jobs.finish(
                conn, job, SeriesState.TRIAGED, None, now, jobs.Triaged(verdict.flag, verdict.score, run.model.label)
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
                    **_model_fields(run),
                    "input_sha256": verdict.input_sha256,
                    "images": len(verdict.image_scores),
                    "score": round(verdict.score, 6),
                    "threshold": verdict.threshold,
                    "flag": bool(verdict.flag),
                    "latency": timings,
                    "sr_instance_uid": sr.sop_instance_uid,
                    "sc_instance_uid": sc.sop_instance_uid,
                    "superseded": not current,
                },
            )
            if current:
                results.supersede_earlier(conn, job, sr.sop_instance_uid)
            results.insert_result(
                conn,
                job,
                ModelState.ACTIVE,
                run,
                verdict,
                not current,
                seq,
                now,
                sr.sop_instance_uid,
                sc.sop_instance_uid,
            )
            if current:
                for obj in objects:
                    enqueue_in(conn, obj, self.destinations, now)
            record_series(
                conn,
                job_id=job.id,
                model_id=run.model.id,
                model_version=run.model.version,
                features=inputs.drift_features,
                score=verdict.score,
                flag=bool(verdict.flag),
                now=now,
            )
        LOG.info(
            "series triaged: flag=%s score=%.3f model=%s (%s)",
            verdict.flag,
            verdict.score,
            run.model.label,
            json.dumps(timings),
        )
        return Outcome(SeriesState.TRIAGED, current, tuple(objects) if current else ())

    def _ended(self, decision: Decision) -> Outcome:
        """A job that ended without a result: ``not-eligible`` or ``failed``, with the
        reason; a claimed series gets its notice."""
        job, reason = decision.job, decision.reason or "no reason recorded"
        notice = self.writer.notice(decision, self.clock())
        conn, now = self.db.conn, self.clock()
        with transaction(conn):
            current = jobs.finish(conn, job, decision.state, reason, now)
            payload: dict[str, Any] = {
                "job_id": job.id,
                "series_instance_uid": job.series_instance_uid,
                "reason": reason,
            }
            if notice is not None and decision.notice is not None:
                payload.update(
                    notice_reason_code=decision.notice.value,
                    notice_sr_instance_uid=notice.sop_instance_uid,
                    notice_sent=current,
                )
            seq = audit_log.append_in(conn, f"series-{decision.state}", payload)
            model = decision.claim.model if decision.claim else None
            if model is not None and decision.state == SeriesState.FAILED:
                # Drift counts a failure of the routed model (not a refusal for its input constraints).
                record_series(
                    conn,
                    job_id=job.id,
                    model_id=model.id,
                    model_version=model.version,
                    features=None,
                    failure=reason,
                    now=now,
                )
            if notice is not None and decision.notice is not None and current:
                results.insert_notice(conn, job, decision.notice.value, reason, notice.sop_instance_uid, seq, now)
                enqueue_in(conn, notice, self.destinations, now)
        LOG.info("series %s: %s", decision.state, reason)
        return Outcome(decision.state, current, (notice,) if notice is not None and current else ())


def _failed(decision: Decision, reason: str) -> Decision:
    """A triaged decision whose results could not be made: the series fails with the
    reason, and gets its notice."""
    return replace(decision, state=SeriesState.FAILED, reason=reason, notice=report.ANALYSIS_FAILED, run=None, key=None)


def _model_fields(run: Run) -> dict[str, Any]:
    return {
        "model_id": run.model.id,
        "model_version": run.model.version,
        "model_sha256": run.model.package_sha256,
        "backend": run.backend,
        "precision": run.precision,
    }

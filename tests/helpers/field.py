"""Field evidence for tests: a box's results written the way the worker and the study page
write them (series, active and shadow results, drift rows, a shadow's audited error,
radiologists' verdicts), with the times given, on a real SQLite file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.audit import chain as audit_log
from appliance.db import open_database, transaction
from appliance.drift.service import record_series
from tests.helpers.drift import REFERENCE_STYLE, series_record


@dataclass(frozen=True)
class Case:
    """One series: the active model's score, the shadow's (None: no shadow ran; "error":
    the shadow failed), seconds from the last instance to the result, and a verdict."""

    active: float
    shadow: float | str | None = None
    seconds: float = 30.0
    verdict: str | None = None


def record_cases(db_path, cases: list[Case], *, at: float, job0: int, model_id: str = "head-ct",
                 active: str = "1.0.0", shadow: str = "1.1.0", threshold: float = 0.5) -> int:
    """Record each case as triaged by ``active`` (and run by ``shadow``) at ``at`` + its index;
    return the next free job id."""
    db = open_database(db_path)
    rng = np.random.default_rng(job0)
    job = job0
    for i, case in enumerate(cases):
        now = at + i
        series, study = f"2.25.{job}1", f"2.25.{job}2"
        with transaction(db.conn) as conn:
            conn.execute(
                "INSERT INTO series (series_instance_uid, study_instance_uid, state, generation, first_received_at, "
                "last_received_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                (series, study, "triaged", 0, now - case.seconds - 5, now - case.seconds, now))
            _inference(conn, job, "active", series, study, model_id, active, case.active, threshold, now)
            result_id = conn.execute("SELECT id FROM inference_results WHERE job_id = ? AND role = 'active'",
                                     (job,)).fetchone()[0]
            features = series_record(REFERENCE_STYLE, rng)["features"]
            record_series(conn, job_id=job, model_id=model_id, model_version=active, features=features,
                          score=case.active, flag=case.active >= threshold, now=now)
            if case.shadow == "error":
                audit_log.append_in(conn, "inference", {"role": "shadow", "job_id": job, "model_id": model_id,
                                                        "model_version": shadow,
                                                        "error": "the model run timed out after 30 s"})
            elif case.shadow is not None:
                _inference(conn, job, "shadow", series, study, model_id, shadow, case.shadow, threshold, now + 1)
            if case.verdict is not None:
                seq = audit_log.append_in(conn, "web-feedback", {"verdict": case.verdict})
                conn.execute(
                    "INSERT INTO web_feedback (study_instance_uid, series_instance_uid, inference_result_id, "
                    "model_id, model_version, flag, verdict, user_name, audit_seq, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (study, series, result_id, model_id, active, int(case.active >= threshold), case.verdict,
                     "dr-a", seq, now + 60))
        job += 1
    db.close()
    return job


def _inference(conn, job: int, role: str, series: str, study: str, model_id: str, version: str, score: float,
               threshold: float, at: float) -> None:
    """One audited inference result of ``role``, as the worker records it."""
    seq = audit_log.append_in(conn, "inference", {"role": role, "job_id": job})
    conn.execute(
        "INSERT INTO inference_results (job_id, role, series_instance_uid, study_instance_uid, generation, "
        "model_id, model_version, score, threshold, flag, audit_seq, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (job, role, series, study, 0, model_id, version, score, threshold, int(score >= threshold), seq, at))

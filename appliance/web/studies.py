"""The worklist's reads: pages of the study summary, one study, the coverage ledger, a
study's series and result files. Reads only: the summary (``web_studies``) is written
by the worker's upkeep (:mod:`appliance.outcome.studies`), and the pages show its age.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors

from appliance.audit import chain as audit_log
from appliance.db import transaction
from appliance.states import ModelState, StudyState

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(text: str) -> bool:
    """Digits and dots, at most 64 characters: safe in a query and in a file name."""
    return len(text) <= 64 and bool(_UID.match(text))


@dataclass(frozen=True)
class Filters:
    """What the worklist shows; every field comes from (and goes back to) the URL."""

    state: str = ""
    modality: str = ""
    model: str = ""
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[str | float]]:
        clauses: list[str] = []
        params: list[str | float] = []
        if self.state:
            clauses.append("state = ?")
            params.append(self.state)
        if self.modality:
            clauses.append("(',' || modalities || ',') LIKE ?")
            params.append(f"%,{self.modality},%")
        if self.model:
            clauses.append("models LIKE ?")
            params.append(f"%{self.model}%")
        if self.since is not None:
            clauses.append("received_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("received_at < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_COLUMNS = (
    "study_instance_uid",
    "state",
    "priority",
    "reason",
    "modalities",
    "models",
    "series_count",
    "received_at",
    "result_at",
    "time_to_result_s",
    "score",
    "header_read",
    "patient_name",
    "patient_id",
    "accession",
    "study_description",
    "updated_at",
)


def page(conn: sqlite3.Connection, filters: Filters, number: int, size: int) -> tuple[list[dict], int]:
    """One page of the worklist (flagged first, then priority, then newest arrival) and the total."""
    where, params = filters.where()
    total = conn.execute(f"SELECT COUNT(*) FROM web_studies{where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM web_studies{where} "
        "ORDER BY flag_rank DESC, priority DESC, received_at DESC LIMIT ? OFFSET ?",
        [*params, size, max(number - 1, 0) * size],
    ).fetchall()
    return [dict(zip(_COLUMNS, row, strict=True)) for row in rows], total


def study(conn: sqlite3.Connection, study_uid: str) -> dict | None:
    """The summary row of one study, or None."""
    row = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM web_studies WHERE study_instance_uid = ?", (study_uid,)
    ).fetchone()
    return dict(zip(_COLUMNS, row, strict=True)) if row else None


def ledger(conn: sqlite3.Connection, since: float, until: float) -> dict:
    """The coverage ledger of studies that arrived in ``[since, until)``.

    ``received`` always equals the sum of the parts, each study counted once in the state
    that matters most; not-analysed and failed studies are split by their reason.
    """
    counts = dict.fromkeys(StudyState, 0)
    reasons: dict[StudyState, dict[str, int]] = {StudyState.NOT_ANALYSED: {}, StudyState.FAILED: {}}
    for text, reason, n in conn.execute(
        "SELECT state, reason, COUNT(*) FROM web_studies WHERE received_at >= ? AND received_at < ? "
        "GROUP BY state, reason",
        (since, until),
    ):
        state = StudyState(text)
        counts[state] += n
        if state in reasons:
            why = reason or "no reason recorded"
            reasons[state][why] = reasons[state].get(why, 0) + n
    return {
        "received": sum(counts.values()),
        **{state.value: n for state, n in counts.items()},
        "not_analysed_by_reason": sorted(reasons[StudyState.NOT_ANALYSED].items(), key=lambda kv: -kv[1]),
        "failed_by_reason": sorted(reasons[StudyState.FAILED].items(), key=lambda kv: -kv[1]),
    }


def series_of(conn: sqlite3.Connection, study_uid: str) -> list[dict]:
    """Every series of a study with its state and active, current result (if any), and the
    "not analysed" notice sent for its current generation (if any)."""
    cols = (
        "series_instance_uid",
        "modality",
        "body_part",
        "series_description",
        "instances",
        "state",
        "reason",
        "flag",
        "score",
        "model",
        "first_received_at",
        "last_received_at",
        "updated_at",
        "result_id",
        "model_id",
        "model_version",
        "threshold",
        "sr_instance_uid",
        "sc_instance_uid",
        "result_at",
        "notice_instance_uid",
    )
    rows = conn.execute(
        "SELECT s.series_instance_uid, s.modality, s.body_part, s.series_description, s.instances, s.state, "
        "s.reason, s.flag, s.score, s.model, s.first_received_at, s.last_received_at, s.updated_at, r.id, "
        "r.model_id, r.model_version, r.threshold, r.sr_instance_uid, r.sc_instance_uid, r.created_at, "
        "(SELECT n.sr_instance_uid FROM notices n WHERE n.series_instance_uid = s.series_instance_uid "
        "AND n.generation = s.generation ORDER BY n.id DESC LIMIT 1) "
        "FROM series s LEFT JOIN inference_results r ON r.id = (SELECT MAX(id) FROM inference_results x "
        "WHERE x.series_instance_uid = s.series_instance_uid AND x.role = ? AND x.superseded = 0 "
        "AND x.generation = s.generation) WHERE s.study_instance_uid = ? ORDER BY s.first_received_at",
        (ModelState.ACTIVE, study_uid),
    ).fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows]


def result_file(conn: sqlite3.Connection, results_dir: Path, study_uid: str, sop_instance_uid: str) -> Path | None:
    """The stored result object (SR or SC) of this study with this SOP instance UID."""
    if not (is_uid(study_uid) and is_uid(sop_instance_uid)):
        return None
    row = conn.execute(
        "SELECT path FROM outbox WHERE sop_instance_uid = ? AND study_instance_uid = ? LIMIT 1",
        (sop_instance_uid, study_uid),
    ).fetchone()
    path = Path(row[0]) if row else results_dir / study_uid / f"{sop_instance_uid}.dcm"
    return path if path.is_file() else None


def series_number(conn: sqlite3.Connection, series_uid: str) -> int | None:
    """The series' SeriesNumber, read from one of its stored instances (the number PACS
    viewers show); None when no instance is stored any more or it has none."""
    for (path,) in conn.execute(
        "SELECT path FROM instances WHERE series_instance_uid = ? ORDER BY received_at LIMIT 3", (series_uid,)
    ):
        try:
            value = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesNumber"]).get("SeriesNumber")
        except (OSError, pydicom.errors.InvalidDicomError):
            continue
        if value not in (None, ""):
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
        return None
    return None


def deliveries(conn: sqlite3.Connection, sop_instance_uid: str) -> list[tuple[str, str]]:
    """``(destination, outbox state)`` of one result object, by destination: where it was
    sent, is waiting to go, or was given up on (empty: it was never queued)."""
    rows = conn.execute(
        "SELECT destination, state FROM outbox WHERE sop_instance_uid = ? ORDER BY destination", (sop_instance_uid,)
    )
    return [(destination, state) for destination, state in rows]


def record_view(conn: sqlite3.Connection, actor: str, study_uid: str, via: str) -> None:
    """Audit that ``actor`` opened the study (``study-viewed``: who, which study, the page
    or the API); the log keeps the study UID only, never the patient's identifiers."""
    with transaction(conn):
        audit_log.append_in(conn, "study-viewed", {"actor": actor, "study_instance_uid": study_uid, "via": via})
